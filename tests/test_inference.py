"""A finished run's model: model.keras, `evaluate`, `predict`, `export`.

One small run (a few seconds on a CPU) is trained once for the whole module.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from PIL import Image

from reproduce import data as data_lib
from reproduce import inference, runs
from reproduce.__main__ import main
from reproduce.config import get_config
from reproduce.data.decode import decode_image
from reproduce.train import build_training_model, compile_model, load_state, train
from tests.test_data import _img, make_tree

ROOT = Path(__file__).resolve().parent.parent
CLASSES = [f"class{k}" for k in range(6)]

# The smoke preset with six classes (so that a top-5 is five of them) and the
# small CIFAR net with the LRN layers; the learning rate is high enough that two
# short epochs make the output depend on the image (an untrained net's
# probabilities vary by ~1e-6 between images, which a 1e-5 comparison cannot see).
OVERRIDES = {
    "model.arch": "cifar_fig1",
    "model.lrn": True,
    "model.dropout": 0.0,
    "data.image_size": 36,
    "data.crop_size": 32,
    "data.pca_color": False,
    "data.synthetic_classes": len(CLASSES),
    "data.synthetic_train": 192,
    "data.synthetic_val": 24,
    "train.schedule": "constant",
    "train.learning_rate": 0.1,
    "train.epochs": 2,
    "eval.batch_size": 64,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference") / "runs"
    d = root / "smoke" / "baseline-test" / "seed0"
    cfg = get_config("smoke", OVERRIDES)
    result = train(cfg, d, meta={"preset": "smoke", "label": "baseline"}, verbose=0)
    val = data_lib.load_split(cfg.data, cfg.data.val_split)
    return SimpleNamespace(
        root=root, dir=d, cfg=cfg, result=result, images=np.asarray(val.images), labels=np.asarray(val.labels)
    )


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path / "cache"))


def _softmax(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _training_probabilities(run):
    """What the training process computed: its own model with the final state."""
    stats = data_lib.load_stats(run.cfg.data)
    model, _ = build_training_model(run.cfg, stats, len(CLASSES))
    compile_model(model, run.cfg)
    load_state(run.dir, model)
    return _softmax(np.asarray(model.predict(run.images, verbose=0), np.float64))


_FRESH = """
import json, sys
import keras, numpy as np
import reproduce
m = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], m.predict(np.load(sys.argv[2]), verbose=0))
print(json.dumps({"backend": keras.backend.backend(), "input": [str(m.input.dtype), list(m.input_shape)],
                  "training_code": sorted(k for k in sys.modules if k in (
                      "reproduce.train", "reproduce.model", "reproduce.data", "reproduce.inference"))}))
"""


def _fresh_process_predict(model_path, images, tmp_path, backend):
    np.save(tmp_path / "x.npy", images)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run(
        [sys.executable, "-c", _FRESH, str(model_path), str(tmp_path / "x.npy"), str(tmp_path / "p.npy")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), np.load(tmp_path / "p.npy")


def test_model_file_loads_in_a_fresh_process_and_predicts_as_training_did(run, tmp_path):
    assert runs.read_classes(run.dir) == CLASSES
    # written before result.json, which marks the run finished
    assert (run.dir / runs.MODEL).stat().st_mtime_ns <= (run.dir / runs.RESULT).stat().st_mtime_ns
    info, probs = _fresh_process_predict(run.dir / runs.MODEL, run.images, tmp_path, keras.backend.backend())
    assert info["backend"] == keras.backend.backend()
    assert info["input"] == ["uint8", [None, 36, 36, 3]]
    assert info["training_code"] == []
    expected = _training_probabilities(run)
    # the comparison can see a wrong crop or mean: the outputs differ between
    # images by far more than its tolerance (a short run can end near the class
    # prior: measured std 1e-3 on JAX, 1e-1 on TensorFlow)
    atol = 1e-5
    assert expected.std(axis=0).max() > 10 * atol
    np.testing.assert_allclose(probs, expected, atol=atol)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    vc = runs.load_run(run.dir).val_correct()
    np.testing.assert_array_equal(probs.argmax(axis=1) == run.labels, vc["top1_center"])


@pytest.mark.slow  # TensorFlow -> JAX under `make test`; the other way by hand
@pytest.mark.skipif(
    importlib.util.find_spec("jax" if keras.backend.backend() == "tensorflow" else "tensorflow") is None,
    reason="the other backend is not installed",
)
def test_model_saved_on_one_backend_loads_on_the_other(run, tmp_path):
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    info, probs = _fresh_process_predict(run.dir / runs.MODEL, run.images, tmp_path, other)
    assert info["backend"] == other
    here = inference.load(run.dir).model.predict(run.images, verbose=0)
    np.testing.assert_allclose(probs, here, atol=1e-5)


def test_preprocessing_is_the_centre_crop_minus_the_training_mean_and_never_augments(run):
    pre = inference.load(run.dir).model.get_layer(inference.PREPROCESS)
    mean = data_lib.load_stats(run.cfg.data).mean_image
    o = (36 - 32) // 2
    expected = run.images[:, o : o + 32, o : o + 32, :].astype(np.float32) - mean[o : o + 32, o : o + 32]
    for training in (False, True):
        got = keras.ops.convert_to_numpy(pre(run.images, training=training))
        np.testing.assert_array_equal(got, expected)


def test_a_mixed_precision_net_is_saved_computing_in_float32(tmp_path):
    from reproduce.model import build_model

    cfg = get_config("smoke", OVERRIDES)
    rng = np.random.default_rng(0)
    keras.config.set_dtype_policy("mixed_bfloat16")  # the conftest fixture restores float32
    net = build_model(cfg.model, image_size=32, num_classes=len(CLASSES), seed=1)
    assert net.get_layer("conv1").compute_dtype == "bfloat16"
    weights = [w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in net.get_weights()]
    net.set_weights(weights)  # not the initial weights: the copy must take the trained ones
    stats = SimpleNamespace(mean_image=rng.uniform(0, 255, (36, 36, 3)).astype(np.float32))
    runs.write_model(tmp_path, inference.inference_model(cfg, net, stats), CLASSES)
    assert keras.config.dtype_policy().name == "mixed_bfloat16"

    keras.config.set_dtype_policy("float32")
    model = keras.saving.load_model(tmp_path / runs.MODEL)
    inner = inference.Loaded(model, CLASSES, None).net()
    assert {layer.compute_dtype for layer in inner.layers[1:]} == {"float32"}
    reference = build_model(cfg.model, image_size=32, num_classes=len(CLASSES), seed=2)
    reference.set_weights(weights)
    x = rng.integers(0, 256, (4, 36, 36, 3), dtype=np.uint8)
    crop = x[:, 2:34, 2:34].astype(np.float32) - stats.mean_image[2:34, 2:34]
    want = _softmax(np.asarray(reference.predict(crop, verbose=0), np.float64))
    np.testing.assert_allclose(model.predict(x, verbose=0), want, atol=1e-5)


def _printed_errors(out: str) -> dict:
    rows = {}
    for line in out.splitlines():
        for label in ("centre crop", "ten views"):
            if line.startswith(label):
                rows[label] = line[len(label) :].split()
    return rows


def test_evaluate_agrees_with_result_json(run, capsys):
    assert main(["evaluate", str(run.dir)]) == 0
    out = capsys.readouterr().out
    assert f"{len(run.labels)} images of synthetic" in out
    rows = _printed_errors(out)
    r = run.result
    for label, suffix in (("centre crop", ""), ("ten views", "_10view")):
        want = [f"{100 * r['val_top1_err' + suffix]:.2f}%", f"{100 * r['val_top5_err' + suffix]:.2f}%"]
        # 24 images: every error is a multiple of 1/24, so two decimals tell any two apart
        assert rows[label][:2] == want, (label, rows[label], want)
        assert rows[label][2:] == ["result.json:"] + want


def test_evaluate_on_another_source_with_the_same_classes(run, tmp_path, capsys, own_cache):
    src = make_tree(tmp_path / "src", splits=("validation",), per_class=3, classes=CLASSES, corrupt=False)
    assert main(["evaluate", str(run.dir), "--data", str(src)]) == 0
    rows = _printed_errors(capsys.readouterr().out)
    # independently: every file decoded as training does, through the saved model
    model = inference.load(run.dir).model
    files = sorted((src / "mydata" / "validation").rglob("*.*"))
    files = [f for f in files if f.suffix != ".txt"]
    x = np.stack([decode_image(f.read_bytes(), 36) for f in files])
    labels = np.array([CLASSES.index(f.parent.name) for f in files])
    top5 = np.argsort(-model.predict(x, verbose=0), axis=1)[:, :5]
    top1_err = 1 - np.mean(top5[:, 0] == labels)
    top5_err = 1 - np.mean((top5 == labels[:, None]).any(axis=1))
    assert rows["centre crop"] == [f"{100 * top1_err:.2f}%", f"{100 * top5_err:.2f}%"]
    assert len(rows["ten views"]) == 2  # no result.json to compare with on other data


def test_evaluate_on_data_with_other_classes_fails_and_names_them(run, tmp_path, capsys, own_cache):
    src = make_tree(tmp_path / "src", splits=("validation",), per_class=1, corrupt=False)
    assert main(["evaluate", str(run.dir), "--data", str(src)]) == 1
    err = capsys.readouterr().err
    assert "does not hold the classes" in err and "classes.json" in err
    assert "class0" in err and "apple" in err and "--data" in err


def _awkward_images(folder: Path) -> list:
    rng = np.random.default_rng(3)
    folder.mkdir()
    files = {
        "cmyk.jpg": (_img(rng, 300, 200, "CMYK"), "JPEG"),
        "gray.png": (_img(rng, 50, 90, "L"), "PNG"),
        "alpha.png": (_img(rng, 40, 40, "RGBA"), "PNG"),
        "wide.webp": (_img(rng, 120, 500), "WEBP"),
    }
    for name, (im, fmt) in files.items():
        im.save(folder / name, format=fmt)
    return [folder / n for n in files]


def _printed_predictions(out: str) -> dict:
    preds, current = {}, None
    for line in out.splitlines():
        if line.startswith("  "):
            pct, name = line.split()
            preds[current].append((name, float(pct.rstrip("%"))))
        else:
            current = line
            preds[current] = []
    return preds


def test_predict_names_the_top_five_classes_of_awkward_images(run, tmp_path, capsys):
    files = _awkward_images(tmp_path / "img")
    assert [Image.open(f).mode for f in files] == ["CMYK", "L", "RGBA", "RGB"]
    assert main(["predict", str(run.dir), *map(str, files)]) == 0
    preds = _printed_predictions(capsys.readouterr().out)
    assert list(preds) == [str(f) for f in files]
    probs = inference.load(run.dir).model.predict(
        np.stack([decode_image(f.read_bytes(), 36) for f in files]), verbose=0
    )
    for f, row in zip(files, probs):
        top = np.argsort(-row)[:5]
        assert preds[str(f)] == [(CLASSES[i], round(100 * float(row[i]), 2)) for i in top]


def test_predict_shows_every_class_when_asked_for_more(run, tmp_path, capsys):
    f = _awkward_images(tmp_path / "img")[0]
    assert main(["predict", str(run.dir), str(f), "--top", "9"]) == 0
    cap = capsys.readouterr()
    assert "6 classes" in cap.err
    assert sorted(n for n, _ in _printed_predictions(cap.out)[str(f)]) == CLASSES


def test_predict_reports_unreadable_and_missing_images_and_still_predicts_the_rest(run, tmp_path, capsys):
    good = _awkward_images(tmp_path / "img")[1]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    missing = tmp_path / "nowhere.png"
    assert main(["predict", str(run.dir), str(bad), str(good), str(missing)]) == 1
    cap = capsys.readouterr()
    assert list(_printed_predictions(cap.out)) == [str(good)]
    lines = cap.err.strip().splitlines()
    assert len(lines) == 2
    assert str(bad) in lines[0] and "JPEG, PNG or WebP" in lines[0]
    assert str(missing) in lines[1] and "check the path" in lines[1]


def test_predict_refuses_a_file_larger_than_training_reads(run, tmp_path, capsys):
    from reproduce.data import decode

    good = _awkward_images(tmp_path / "img")[1]
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:  # sparse: one byte past the cap, no disk used
        f.seek(decode.MAX_IMAGE_BYTES)
        f.write(b"\0")
    assert main(["predict", str(run.dir), str(huge), str(good)]) == 1
    cap = capsys.readouterr()
    assert list(_printed_predictions(cap.out)) == [str(good)]
    assert cap.err.strip() == (
        f"error: {huge} is 64.0 MiB ({decode.MAX_IMAGE_BYTES + 1} bytes), more than the 64.0 MiB one image file "
        "may have (reproduce.data.decode.MAX_IMAGE_BYTES): it is not read. Check the path, or give a smaller "
        "copy of the image (JPEG, PNG or WebP)."
    )


def test_unusable_run_directories_say_what_is_wrong_and_the_fix(run, tmp_path, capsys):
    def fails(*args):
        assert main(list(map(str, args))) == 1
        return capsys.readouterr().err

    err = fails("evaluate", tmp_path)
    assert "not a run directory" in err and runs.CONFIG in err

    unfinished = tmp_path / "unfinished"
    shutil.copytree(run.dir, unfinished)
    (unfinished / runs.RESULT).unlink()
    for cmd in ("evaluate", "predict"):
        err = fails(cmd, unfinished, *(["x.jpg"] if cmd == "predict" else []))
        assert "unfinished" in err and runs.RESULT in err and "resume" in err

    no_model = tmp_path / "no_model"
    shutil.copytree(run.dir, no_model)
    (no_model / runs.MODEL).unlink()
    err = fails("evaluate", no_model)
    assert f"no {runs.MODEL}" in err and f"python -m reproduce export {no_model}" in err

    published = tmp_path / "published"
    runs.publish(run.root, published)
    copy = published / run.dir.relative_to(run.root)
    err = fails("predict", copy, "x.jpg")
    assert f"no {runs.MODEL}" in err and "results/" in err and "machine that trained it" in err


def test_publishing_leaves_the_model_out(run, tmp_path):
    assert runs.MODEL not in runs.PUBLISHED_FILES and runs.CLASSES not in runs.PUBLISHED_FILES
    res = runs.publish(run.root, tmp_path / "results")
    (dst,) = res.copied
    assert (dst / runs.RESULT).is_file() and not (dst / runs.MODEL).exists()


def test_export_writes_a_missing_model_from_the_training_state(run, tmp_path, capsys):
    d = tmp_path / "old_run"
    shutil.copytree(run.dir, d)
    (d / runs.MODEL).unlink()
    (d / runs.CLASSES).unlink()
    assert main(["export", str(d)]) == 0
    assert "from the training state" in capsys.readouterr().out
    assert runs.read_classes(d) == CLASSES
    rebuilt = inference.load(d).model.predict(run.images, verbose=0)
    original = inference.load(run.dir).model.predict(run.images, verbose=0)
    np.testing.assert_allclose(rebuilt, original, atol=1e-6)


def test_export_from_state_refuses_other_data_than_the_run_trained_on(run, tmp_path, capsys):
    d = tmp_path / "old_run"
    shutil.copytree(run.dir, d, ignore=shutil.ignore_patterns(runs.MODEL, runs.CLASSES))
    stored = json.loads((d / runs.CONFIG).read_text())
    stored["meta"]["data_id"] = "sha256:" + "0" * 64
    (d / runs.CONFIG).write_text(json.dumps(stored))
    assert main(["export", str(d)]) == 1
    err = capsys.readouterr().err
    assert "is not the data" in err and "data_id" in err and "original data" in err
    assert not (d / runs.MODEL).exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="a SavedModel needs TensorFlow")
def test_savedmodel_export_serves_the_same_probabilities(run, tmp_path, capsys):
    import tensorflow as tf

    out = tmp_path / "serving"
    assert main(["export", str(run.dir), "--savedmodel", str(out)]) == 0
    assert "signature 'serve'" in capsys.readouterr().out
    served = tf.saved_model.load(str(out))
    (spec,) = served.serve.input_signature
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 36, 36, 3]
    got = served.serve(tf.constant(run.images)).numpy()
    want = inference.load(run.dir).model.predict(run.images, verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-5)


# -- SavedModel export: the target folder ------------------------------------------------


def _export(run, out, *extra):
    return main(["export", str(run.dir), "--savedmodel", str(out), *extra])


needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="a SavedModel needs TensorFlow")


@needs_tf
def test_savedmodel_export_refuses_a_file(run, tmp_path, capsys):
    target = tmp_path / "model.pb"
    target.write_text("not a folder")
    assert _export(run, target) == 1
    err = capsys.readouterr().err
    assert f"--savedmodel {target}: that is a file, and a SavedModel is a folder" in err
    assert "Traceback" not in err and target.read_text() == "not a folder"


@needs_tf
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: no unwritable folder to test")
def test_savedmodel_export_refuses_an_unwritable_folder(run, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert _export(run, locked / "serving") == 1
        err = capsys.readouterr().err
        assert f"--savedmodel {locked / 'serving'}: cannot write in {locked}" in err
    finally:
        locked.chmod(0o700)


@needs_tf
def test_savedmodel_export_into_a_folder_it_cannot_create_is_a_clear_error(run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _export(run, blocker / "serving") == 1  # its parent is a file
    err = capsys.readouterr().err
    assert f"--savedmodel {blocker / 'serving'}: cannot write in {blocker}" in err
    assert "Give a folder you can write to" in err


@needs_tf
def test_savedmodel_export_never_overwrites_without_force_and_leaves_no_partial_export(
    run, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "serving"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier export")
    assert _export(run, out) == 1
    err = capsys.readouterr().err
    assert f"--savedmodel {out}: the folder is not empty" in err and "--force" in err
    assert "FORCE=1" in err and (out / "keep.txt").read_text() == "an earlier export"

    # An export that dies half-way (here: after writing a file into the temporary
    # folder) leaves the target as it was and no temporary folder.
    real = keras.Model.export

    def dies(self, path, *a, **k):
        Path(path, "saved_model.pb").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "export", dies)
    with pytest.raises(KeyboardInterrupt):
        _export(run, out, "--force")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]
    # A temporary folder of a killed export (its process gone) is removed by the next.
    stale = tmp_path / f".serving{inference.EXPORT_TMP}999999999-abc"
    stale.mkdir()
    monkeypatch.setattr(keras.Model, "export", real)
    assert _export(run, out, "--force") == 0
    assert (out / "saved_model.pb").is_file() and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]


def _readme_run_files() -> dict:
    """{name: TensorFlow-only?} for the files and folders the README says every run
    directory holds (its paragraph "Every run writes one directory")."""
    text = (ROOT / "README.md").read_text()
    para = " ".join(text[text.index("Every run writes one directory") :].split("\n\n", 1)[0].split())
    named = list(re.finditer(r"`([\w.]+(?:/|\.json|\.csv|\.npz))`", para))
    out = {}
    for m, nxt in zip(named, [*named[1:], None]):
        says = para[m.end() : nxt.start() if nxt else len(para)]
        out[m.group(1)] = "TensorFlow backend only" in says
    return out


def test_a_run_directory_holds_what_the_readme_lists_on_this_backend(run):
    listed = _readme_run_files()
    assert {"config.json", "result.json", "metrics.csv", "state/", "tensorboard/"} <= set(listed)
    tensorboard = keras.backend.backend() == "tensorflow" and importlib.util.find_spec("tensorboard") is not None
    for name, tf_only in listed.items():
        present = (run.dir / name.rstrip("/")).exists()
        expected = tensorboard or not tf_only
        assert present == expected, (
            f"README lists {name}{' (TensorFlow only)' if tf_only else ''}; the run "
            f"{'has' if present else 'lacks'} it on {keras.backend.backend()}"
        )
