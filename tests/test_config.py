"""The configuration tree: paper defaults, presets, strict typed dotted overrides."""

import typing

import pytest

from reproduce import config as C

# Code that runs no Keras model differently per backend: `make test` runs it once.
pytestmark = pytest.mark.one_backend


def test_defaults_are_the_paper():
    cfg = C.Config()
    assert cfg.model.activation == "relu" and cfg.model.lrn and cfg.model.towers == 2
    assert (cfg.model.lrn_size, cfg.model.lrn_k, cfg.model.lrn_alpha, cfg.model.lrn_beta) == (5, 2.0, 1e-4, 0.75)
    assert cfg.model.pooling == "overlap" and cfg.model.dropout == 0.5 and cfg.model.init == "paper"
    assert (cfg.data.image_size, cfg.data.crop_size) == (256, 227)
    assert cfg.data.crop_flip and cfg.data.pca_color and cfg.data.pca_std == 0.1
    t = cfg.train
    assert (t.batch_size, t.learning_rate, t.momentum, t.weight_decay) == (128, 0.01, 0.9, 5e-4)
    assert t.schedule == "plateau" and t.max_drops == 3 and t.epochs == 90


@pytest.mark.parametrize("preset", sorted(C.PRESETS))
def test_every_preset_resolves(preset):
    cfg = C.get_config(preset)
    assert C.validate(cfg) is cfg


def test_overrides_are_parsed_and_typed():
    cfg = C.get_config(
        "imagenette",
        [
            "model.lrn=false",
            "train.epochs=3",
            "train.learning_rate=2e-3",
            "train.step_epochs=2,5",
            "model.num_classes=none",
        ],
    )
    assert cfg.model.lrn is False and cfg.train.epochs == 3
    assert cfg.train.learning_rate == pytest.approx(2e-3) and cfg.train.step_epochs == [2, 5]
    assert cfg.model.num_classes is None
    cfg = C.get_config("imagenette", {"model.towers": 1, "data.crop_flip": "off"})
    assert cfg.model.towers == 1 and cfg.data.crop_flip is False


def test_unknown_key_suggests_the_closest():
    with pytest.raises(C.ConfigError, match=r"model\.lrn"):
        C.get_config("smoke", ["model.lnr=false"])
    with pytest.raises(C.ConfigError, match=r"train\.epochs"):
        C.get_config("smoke", ["epochs=3"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.epochs=three", "not an integer"),
        ("model.lrn=maybe", "not a boolean"),
        ("model.dropout=x", "not a number"),
        ("model.activation=sigmoid", r"'relu', 'tanh'"),
        ("model.pooling=avg", "overlap"),
        ("model.towers=3", "1, 2"),
        ("train.schedule=cosine", "plateau"),
        ("model.dropout=1.5", r"\[0, 1\)"),
        ("data.crop_size=300", "larger than"),
        ("notakeyvalue", "key=value"),
    ],
)
def test_bad_values_name_the_field_and_the_allowed(override, match):
    with pytest.raises(C.ConfigError, match=match) as e:
        C.get_config("imagenet", [override])
    if "=" in override:
        assert override.split("=")[0] in str(e.value)


def test_unknown_preset_lists_presets():
    with pytest.raises(C.ConfigError, match="imagenette"):
        C.get_config("imagenete")


def test_fingerprint_ignores_seed_but_not_settings():
    a = C.get_config("smoke")
    b = C.get_config("smoke", ["train.seed=7"])
    c = C.get_config("smoke", ["model.lrn=false"])
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_round_trip_and_diff():
    cfg = C.get_config("cifar10", ["model.lrn=false"])
    again = C.Config.from_dict(cfg.to_dict())
    assert again == cfg
    d = C.diff(C.get_config("cifar10"), cfg)
    assert d == {"model.lrn": (True, False)}


def test_a_local_dataset_counts_by_content_not_by_path_or_name(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path / "cache"))
    payload = b"the same archive bytes" * 100
    a = tmp_path / "home" / "data.tar.xz"
    b = tmp_path / "mnt" / "copy" / "data.tar.xz"
    c = tmp_path / "other" / "data.tar.xz"  # same name, other content
    for p, data in ((a, payload), (b, payload), (c, payload + b"!")):
        p.parent.mkdir(parents=True)
        p.write_bytes(data)
    fa, fb, fc = (C.get_config("imagenette", [f"data.source={p}"]).fingerprint() for p in (a, b, c))
    assert fa == fb != fc
    assert fa != C.get_config("imagenette").fingerprint()  # tfds differs
    # the identity is the SHA-256 of the bytes, computed independently here
    import hashlib

    assert C.data_identity(str(a)) == "sha256:" + hashlib.sha256(payload).hexdigest()[:16]
    # folders: by image names and sizes
    for root, extra in ((tmp_path / "f1", b""), (tmp_path / "f2", b""), (tmp_path / "f3", b"x")):
        (root / "train" / "cat").mkdir(parents=True)
        (root / "train" / "cat" / "0.jpg").write_bytes(b"jpeg" + extra)
    ids = [C.data_identity(str(tmp_path / f)) for f in ("f1", "f2", "f3")]
    assert ids[0] == ids[1] != ids[2] and ids[0].startswith("files:")


def test_a_key_added_later_with_a_neutral_default_keeps_the_fingerprint():
    """A run stored before a key existed (its config.json lacks the key) is the same
    experiment as today's config: missing keys read as their defaults, and the
    identity holds only keys that differ from the paper."""
    cfg = C.get_config("cifar10", ["model.lrn=false"])
    old = cfg.to_dict()
    del old["data"]["pca_std"]  # as written by code that predates data.pca_std
    del old["train"]["stop_at_train_error"]
    assert C.experiment_identity(old, "tfds:cifar10") == C.experiment_identity(cfg, "tfds:cifar10")
    assert C.fingerprint_of(C.experiment_identity(old, "tfds:cifar10")) == cfg.fingerprint()
    # the identity is a diff from the paper: a key at its default is not in it
    ident = C.experiment_identity(cfg)
    assert "model.lrn" in ident and "model.towers" not in ident and "train.seed" not in ident
    assert "distribute.scheme" not in C.experiment_identity(C.get_config("cifar10", ["distribute.scheme=mirrored"]))


def test_renamed_keys_are_migrated(monkeypatch):
    cfg = C.get_config("smoke")
    old = cfg.to_dict()
    old["model"]["normalize"] = old["model"].pop("lrn")
    with pytest.raises(C.ConfigError, match="normalize"):
        C.experiment_identity(old)
    monkeypatch.setitem(C.RENAMED, "model.normalize", "model.lrn")
    assert C.experiment_identity(old) == C.experiment_identity(cfg)


# -- values no range used to catch, and keys typed under another name -------------------


def _numeric_keys():
    out = []
    for key, (hint, choices, _) in C._DECLARED.items():
        base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if choices is None and base[0] in (int, float, list):
            out.append(key)
    return out


def test_every_numeric_key_has_a_finite_range():
    keys = _numeric_keys()
    assert "train.learning_rate" in keys and "data.max_train" in keys and "train.step_epochs" in keys
    assert [k for k in keys if k not in C.RANGES] == []
    for key in keys:
        rng = C.RANGES[key]
        assert float("nan") not in rng and float("inf") not in rng and float("-inf") not in rng, key


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.learning_rate=-0.01", "train.learning_rate=-0.01 must be > 0"),
        ("train.learning_rate=nan", "train.learning_rate=nan must be a finite number > 0"),
        ("train.momentum=1", "train.momentum=1.0 must be in [0, 1)"),
        ("model.dropout=nan", "model.dropout=nan must be a finite number in [0, 1)"),
        ("model.width=inf", "model.width=inf must be a finite number > 0"),
        ("data.max_train=-1", "data.max_train=-1 must be an integer >= 0"),
        ("data.max_val=-5", "data.max_val=-5 must be an integer >= 0"),
        ("train.seed=-1", "train.seed=-1 must be an integer in [0, 2147483647]"),
        ("train.weight_decay=nan", "train.weight_decay=nan must be a finite number >= 0"),
        ("train.stop_at_train_error=1.5", "train.stop_at_train_error=1.5 must be in [0, 1]"),
        ("train.step_epochs=0,5", "train.step_epochs=[0, 5]: 0 is not allowed; every element must be an integer >= 1"),
        ("model.lrn_beta=-inf", "model.lrn_beta=-inf must be a finite number >= 0"),
    ],
)
def test_out_of_range_values_name_the_key_and_the_range(override, message):
    with pytest.raises(C.ConfigError) as e:
        C.get_config("smoke", [override])
    assert str(e.value) == message


def test_a_config_built_in_code_is_range_checked_too():
    cfg = C.get_config("smoke")
    cfg.train.learning_rate = float("nan")  # set directly: no parsing involved
    with pytest.raises(C.ConfigError, match=r"train\.learning_rate=nan must be a finite"):
        C.validate(cfg)


@pytest.mark.parametrize(
    "typed, meant",
    [
        ("train.lr", "train.learning_rate"),
        ("lr", "train.learning_rate"),
        ("train.base_lr", "train.learning_rate"),
        ("train.wd", "train.weight_decay"),
        ("train.bs", "train.batch_size"),
        ("train.batch", "train.batch_size"),
        ("model.act", "model.activation"),
        ("train.epoch", "train.epochs"),
        ("model.lnr", "model.lrn"),  # a misspelling still finds its key
    ],
)
def test_an_unknown_key_suggests_the_key_meant_by_its_words_and_aliases(typed, meant):
    with pytest.raises(C.ConfigError) as e:
        C.get_config("smoke", [f"{typed}=1"])
    assert f"did you mean {meant}" in str(e.value)


def test_every_command_starts_from_the_same_default_preset(tmp_path, capsys):
    """`get_config()`, `python -m reproduce` and `make` use DEFAULT_PRESET when no preset is named."""
    import json
    import os
    import re
    import subprocess
    from pathlib import Path

    from reproduce.__main__ import main

    assert C.get_config().to_dict() == C.get_config(C.DEFAULT_PRESET).to_dict()
    assert main(["show"]) == 0
    assert json.loads(capsys.readouterr().out) == C.get_config(C.DEFAULT_PRESET).to_dict()
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    makefile = Path(__file__).resolve().parent.parent / "Makefile"
    p = subprocess.run(
        ["make", "--no-print-directory", "-n", "-f", str(makefile), "train"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    assert re.search(r"-m reproduce train --preset (\S+)", p.stdout).group(1) == C.DEFAULT_PRESET
