"""The command lines users type (in subprocesses: run once, under one backend)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

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


def test_bench_takes_its_own_options_and_others_are_refused():
    p = run("reproduce", "bench", "--help")
    assert p.returncode == 0 and "--steps-per-execution" in p.stdout and "--full" in p.stdout
    p = run("reproduce", "show", "--preset", "smoke", "--full")
    assert p.returncode == 2 and "unrecognized arguments: --full" in p.stderr


def test_unknown_ablation_lists_valid_names():
    p = run("ablations", "run", "no_lnr", "--preset", "smoke")
    assert p.returncode == 2
    assert "no_lrn" in p.stderr and "one_tower" in p.stderr


def test_reproduce_without_data_stops_at_once_with_both_ways(tmp_path):
    import os

    env = {**os.environ, "REPRODUCE_OFFLINE": "1", "TFDS_DATA_DIR": str(tmp_path / "tfds")}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "ablations",
            "reproduce",
            "--preset",
            "imagenette",
            "--seeds",
            "1",
            "--runs",
            str(tmp_path / "runs"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert "offline" in p.stderr and "DATA_DIR" in p.stderr and "imagenette" in p.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-made
