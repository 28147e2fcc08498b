"""The command lines users type."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_explains_presets_overrides_and_results():
    out = run("reproduce", "train", "--help").stdout
    for word in ("--preset", "--set", "smoke", "imagenette", "result.json", "resumes"):
        assert word in out


def test_unknown_key_fails_with_suggestion():
    p = run("reproduce", "show", "--preset", "smoke", "--set", "model.lnr=false")
    assert p.returncode == 2 and "model.lrn" in p.stderr


def test_show_diff():
    p = run("reproduce", "show", "--preset", "cifar10", "--diff", "--set", "model.lrn=false")
    assert p.returncode == 0 and "model.lrn = False" in p.stdout


def test_unknown_ablation_lists_valid_names():
    p = run("ablations", "run", "no_lnr", "--preset", "smoke")
    assert p.returncode == 2
    assert "no_lrn" in p.stderr and "one_tower" in p.stderr
