"""The commands the README, docs/ and the presets' docstrings give a user work: each
make target exists and passes on every variable it is given, each `python -m` module
takes the subcommand and options given, each override is a valid key and value, each
named ablation is one of its preset's, and each preset's docstring runs that preset."""

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from ablations.registry import for_preset
from reproduce.config import NOT_IDENTITY, PRESETS, flatten, get_config

# Commands and configuration only, no Keras model: `make test` runs them once.
pytestmark = pytest.mark.one_backend

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "experiments" / "README.md"]
DEFAULT_PRESET = "imagenette"  # the Makefile's and the CLIs' default
TRAINS = {("train",), ("run",), ("reproduce",), ("plan",)}  # subcommands that run a preset
# Where a command ends: the shell's separators (a `for ... do ...` line).
_END = re.compile(r"\s*(?:&&|;|\|\||\||\s&\s|\s&$)")


def _snippets(text: str) -> list[str]:
    """Code-block lines (continuations joined) and inline code spans (reST's double
    backticks too) of a Markdown text or a docstring."""
    out = []
    fence = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
    for block in fence.findall(text):
        out += block.replace("\\\n", " ").splitlines()
    prose = " ".join(fence.sub("", text).split())
    return out + re.findall(r"`+([^`]+)`+", prose)


def _command(snippet: str):
    """("make", args) or (module, args) for a snippet that runs one, else None. Shell
    variables become their names ($R -> R); `...` placeholders are dropped."""
    m = re.match(r"\s*(?:\w+=\S*\s+)*make\s+(.*)", snippet)
    kind = "make"
    if m is None:
        m = re.search(r"(?:^|\s)(?:\S*/)?python3? -m (\S+)(.*)", snippet)
        if m is None:
            return None
        kind, rest = m.group(1), m.group(2)
    else:
        rest = m.group(1)
    rest = _END.split(rest, maxsplit=1)[0]
    if rest.count('"') % 2:  # the quote that closes an ssh command
        rest = rest.split('"', 1)[0]
    args = [re.sub(r"\$(\w+)", r"\1", a) for a in shlex.split(rest, comments=True)]
    return kind, tuple(a for a in args if a != "...")


def _commands(text: str) -> list:
    return [c for c in map(_command, _snippets(text)) if c is not None]


DOC_COMMANDS = sorted(
    {c for path in DOCS for c in _commands(path.read_text())} | {c for p in PRESETS.values() for c in _commands(p.doc)}
)
MAKE = [args for kind, args in DOC_COMMANDS if kind == "make"]
PYTHON = [(kind, args) for kind, args in DOC_COMMANDS if kind != "make"]


@cache
def _make_n(args: tuple) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under `make test`
    return subprocess.run(
        ["make", "--no-print-directory", "-n", "-f", str(ROOT / "Makefile"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _option(args, name):
    """The values given to option `name` (up to the next option) in an argument list."""
    if name not in args:
        return None
    rest = args[args.index(name) + 1 :]
    return list(rest[: next((i for i, a in enumerate(rest) if a.startswith("-")), len(rest))])


def test_the_commands_of_a_text_are_found():
    text = (
        "Run `make reproduce\nPRESET=smoke` or ``python -m reproduce\n   presets``.\n\n```sh\n"
        "KERAS_BACKEND=jax .venv/bin/python -m ablations run a \\\n  --preset smoke   # a comment\n"
        'make reproduce ... DATA_DIR=... SET="a=1 b=2"\nruff check .\n```\n'
    )
    assert _commands(text) == [
        ("ablations", ("run", "a", "--preset", "smoke")),
        ("make", ("reproduce", "DATA_DIR=...", "SET=a=1 b=2")),
        ("make", ("reproduce", "PRESET=smoke")),
        ("reproduce", ("presets",)),
    ]
    assert _command('ssh h "cd x && .venv/bin/python -m ablations run a --worker $i/3" & done; wait') == (
        "ablations",
        ("run", "a", "--worker", "i/3"),
    )
    assert MAKE and PYTHON  # the docs give both kinds, so the tests below test something


@pytest.mark.parametrize("args", MAKE, ids=" ".join)
def test_a_documented_make_command_reaches_its_commands(args):
    """The target exists, and every VAR=value given reaches the commands it runs (a
    misspelt variable would be ignored silently)."""
    p = _make_n(args)
    assert p.returncode == 0, p.stderr
    for a in args:
        if "=" in a:
            value = a.split("=", 1)[1]
            assert value in p.stdout, (a, p.stdout)


@pytest.mark.parametrize("args", MAKE, ids=" ".join)
def test_a_documented_make_command_has_valid_overrides_and_ablations(args):
    out = _make_n(args).stdout
    for line in out.splitlines():
        for kind, cmd in filter(None, [_command(line)]):
            _check_config(kind, cmd)


@pytest.mark.parametrize("kind, args", PYTHON, ids=lambda x: " ".join(x) if isinstance(x, tuple) else x)
def test_a_documented_python_command_has_valid_overrides_and_ablations(kind, args):
    _check_config(kind, args)


def _check_config(kind, args):
    preset = (_option(args, "--preset") or [DEFAULT_PRESET])[0]
    overrides = _option(args, "--set")
    if kind in ("reproduce", "ablations") and preset != "PRESET":
        assert preset in PRESETS, args
        get_config(preset, overrides or [])  # raises on an unknown key or a bad value
    if kind == "ablations" and args[:1] in (("run",), ("plan",)):
        names = _option(args, args[0])
        valid = {a.name for a in for_preset(preset)}
        assert set(names) <= valid, (names, preset, sorted(valid))


@pytest.mark.slow
@pytest.mark.parametrize(
    "module, sub",
    sorted({(k, a[0] if a and not a[0].startswith("-") else "") for k, a in PYTHON}),
    ids=lambda x: x or "-",
)
def test_a_documented_python_command_parses(module, sub):
    """`python -m module [subcommand] --help` works and lists every option the docs
    give it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, "-m", module, *([sub] if sub else []), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    given = {
        a.split("=", 1)[0]
        for k, args in PYTHON
        if k == module and (args[:1] == (sub,) or not sub)
        for a in args
        if a.startswith("--")
    }
    missing = [o for o in sorted(given) if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", p.stdout)]
    assert not missing, (missing, p.stdout)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_docstring_gives_a_command_that_runs_it(name):
    """`python -m reproduce presets` and the report show each preset's docstring;
    the command it gives runs that preset."""
    cmds = _commands(PRESETS[name].doc)
    for args in [args for kind, args in cmds if kind == "make"]:
        p = _make_n(args)
        assert p.returncode == 0, p.stderr
        cmds += [c for c in map(_command, p.stdout.splitlines()) if c is not None]
    ran = [
        (_option(args, "--preset") or [DEFAULT_PRESET])[0]
        for kind, args in cmds
        if kind in ("reproduce", "ablations") and args[:1] in TRAINS
    ]
    assert ran and set(ran) == {name}, ran


def _fingerprint_claims(text: str) -> list:
    """(key, is_part) for each backticked configuration key that a sentence of `text`
    says is, or is not, part of the run's fingerprint (its identity)."""
    keys = set(flatten(get_config("smoke").to_dict()))
    prose = " ".join(re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M).split())
    out = []
    for sentence in re.split(r"(?<=[.;:])\s+(?=[`A-Z(])", prose):
        if "fingerprint" not in sentence and "identity" not in sentence:
            continue
        named = [k for k in re.findall(r"`([\w.]+)`", sentence) if k in keys]
        negated = re.search(r"\b(?:not|never|no)\b[^.]*\b(?:fingerprint|identity)\b", sentence) is not None
        out += [(k, not negated) for k in named]
    return out


def test_fingerprint_claims_of_a_text_are_found():
    text = (
        "`distribute.scheme` is not part of the configuration fingerprint, so runs resume. "
        "The `model.lrn` switch is part of the fingerprint. `train.seed` sets the seed.\n"
    )
    assert _fingerprint_claims(text) == [("distribute.scheme", False), ("model.lrn", True)]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_what_the_docs_say_is_in_a_fingerprint_is_what_the_code_keys_runs_by(path):
    """A key the docs call part of the fingerprint changes the run directory, and a key
    they call no part of it is one of NOT_IDENTITY (and the other way round)."""
    for key, is_part in _fingerprint_claims(path.read_text()):
        assert (key not in NOT_IDENTITY) == is_part, (
            f"{path.name} says `{key}` is {'' if is_part else 'not '}part of the fingerprint; "
            f"reproduce.config.NOT_IDENTITY says otherwise"
        )
