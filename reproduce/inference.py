"""Using a trained run: its saved Keras model, evaluation again, prediction, export.

Every finished run directory holds ``model.keras`` and ``classes.json``
(`reproduce.runs` owns the names). The model is the inference net:

    image       uint8 (batch, S, S, 3) RGB, S = data.image_size: the §2 form (shorter
                side rescaled to S, central SxS patch; `reproduce.data.decode`)
    preprocess  `reproduce.augment.Augment` without augmentation: the central CxC
                window (C = data.crop_size) minus the training set's mean image,
                which it holds as a weight (§2)
    <net>       the trained network (`reproduce.model`), float32
    probabilities  softmax over the classes, in the order of classes.json

It computes in float32 whatever precision the run trained in, so it loads and
runs on any device and backend (a mixed_bfloat16 run's evaluation may differ from
its result.json by the bfloat16 rounding). It is saved uncompiled; compile it to
fine-tune (its output is probabilities, so a loss with ``from_logits=False``).

Loading needs the project's registered layers, which `import reproduce`
registers, and nothing of its training code::

    import keras
    import reproduce
    model = keras.saving.load_model("runs/.../seed0/model.keras")

`load(run_dir)` does the same after checking the run directory. The functions
here back ``python -m reproduce evaluate / predict / export``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np

from reproduce import data as data_lib
from reproduce import runs
from reproduce import train as train_lib
from reproduce.config import Config
from reproduce.data import decode as dec
from reproduce.data.decode import decode_image
from reproduce.evaluate import evaluate, validation_errors
from reproduce.files import as_created, pid_alive
from reproduce.model import PREPROCESS, inference_model
from reproduce.sources import DataError

TOP = 5


class RunError(ValueError):
    """A run directory that cannot be used; the message names the file and the fix."""


# --------------------------------------------------------------------------------------
# Loading, with a clear message for each way a run directory can be unusable
# --------------------------------------------------------------------------------------


@dataclass
class Loaded:
    model: keras.Model
    class_names: list
    run: runs.Run

    @property
    def image_size(self) -> int:
        return int(self.model.input_shape[1])

    def net(self) -> keras.Model:
        return next(layer for layer in self.model.layers if isinstance(layer, keras.Model))

    def mean_image(self) -> np.ndarray | None:
        pre = self.model.get_layer(PREPROCESS)
        return np.asarray(keras.ops.convert_to_numpy(pre.mean_image)) if pre.mean_subtract else None


def finished_run(run_dir) -> runs.Run:
    """The run stored in `run_dir`; RunError unless it exists and has finished."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).is_file():
        raise RunError(
            f"{run_dir} is not a run directory: it has no {runs.CONFIG}. Give the "
            "folder that `python -m reproduce train` printed, e.g. "
            "runs/smoke/baseline-<fingerprint>/seed0."
        )
    try:
        run = runs.load_run(run_dir)
    except runs.RunFileError as e:
        raise RunError(str(e)) from None
    if not run.finished:
        why = f" (the last attempt stopped: {run.failure.get('reason')})" if run.failure else ""
        command = run.meta.get("command") or "its training command"
        raise RunError(
            f"{run_dir} holds an unfinished run: it has no {runs.RESULT}{why}. The model "
            f"file is written when training finishes; run `{command}` again to resume it."
        )
    return run


def load(run_dir) -> Loaded:
    """The model and class names of a finished run (RunError says what is missing)."""
    run_dir = Path(run_dir)
    run = finished_run(run_dir)
    missing = [f for f in (runs.MODEL, runs.CLASSES) if not (run_dir / f).is_file()]
    if missing:
        if (run_dir / runs.STATE).is_dir():
            fix = f"Write it from the run's training state ({runs.STATE}/) with `python -m reproduce export {run_dir}`."
        else:
            fix = (
                f"This copy has no training state ({runs.STATE}/) to write it from either "
                "(published runs in results/ keep only the small files): use the run "
                "directory on the machine that trained it."
            )
        raise RunError(f"{run_dir} has no {' or '.join(missing)}. {fix}")
    try:
        model = keras.saving.load_model(run_dir / runs.MODEL, compile=False)
        names = runs.read_classes(run_dir)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise RunError(
            f"{run_dir / runs.MODEL} cannot be loaded ({type(e).__name__}: {e}). If the "
            f"run has its training state, `python -m reproduce export {run_dir}` writes "
            "it again."
        ) from None
    if len(names) != model.output_shape[-1]:
        raise RunError(
            f"{run_dir / runs.CLASSES} names {len(names)} classes, the model has "
            f"{model.output_shape[-1]} outputs; `python -m reproduce export {run_dir}` "
            "writes both files again from the training state."
        )
    return Loaded(model, names, run)


def write_model_from_state(run_dir) -> Path:
    """model.keras and classes.json of a finished run, from its training state.

    For runs that finished before the trainer saved models. Needs the run's data
    (its mean image and class names), checked to be the data it trained on.
    """
    run_dir = Path(run_dir)
    run = finished_run(run_dir)
    state = runs.state_path(run_dir)
    if not state.is_file():
        raise RunError(
            f"{run_dir} has no training state ({state.relative_to(run_dir)}) to write the "
            "model from (published runs in results/ keep only the small files): use the "
            "run directory on the machine that trained it."
        )
    cfg = Config.from_dict(run.config)
    trained_on = run.meta.get("data_id")
    if trained_on and cfg.data_id() != trained_on:
        raise RunError(
            f"data.source={cfg.data.source!r} is not the data {run_dir} trained on (its "
            f"content differs from {runs.CONFIG}'s meta.data_id {trained_on}); the model "
            "needs that data's mean image and classes. Put the original data back there."
        )
    data = data_lib.load(cfg.data)
    model, net = train_lib.build_training_model(cfg, data.stats, data.num_classes)
    train_lib.compile_model(model, cfg)
    train_lib.load_state(run_dir, model)
    runs.write_model(run_dir, inference_model(cfg, net, data.stats), data.class_names)
    return run_dir / runs.MODEL


# --------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------


def evaluate_run(run_dir, source: str | None = None) -> dict:
    """Centre-crop and ten-view validation errors of the run's model.

    On the run's own validation data (`source` None) or on `source`, read with the
    run's data settings (split, image size, max_val), which must hold the same
    classes. The evaluation is the trainer's own (`reproduce.evaluate.evaluate`).
    """
    loaded = load(run_dir)
    cfg = Config.from_dict(loaded.run.config)
    if source is not None:
        cfg.data.source = str(source)
    val = data_lib.load_split(cfg.data, cfg.data.val_split)
    if list(val.class_names) != loaded.class_names:
        mine, theirs = set(loaded.class_names), set(val.class_names)
        raise RunError(
            f"{cfg.data.source} (split {val.split!r}) does not hold the classes {run_dir} "
            f"was trained on ({runs.CLASSES}): only in the run: "
            f"{sorted(mine - theirs)[:10] or 'none'}; only in the data: "
            f"{sorted(theirs - mine)[:10] or 'none'}"
            + ("" if mine != theirs else "; the same names in another order")
            + ". Give --data a source with one folder per class of the run."
        )
    stats = SimpleNamespace(mean_image=loaded.mean_image())
    out = evaluate(cfg, loaded.model, loaded.net(), stats, val, ten_view=True)
    return {
        "source": cfg.data.source,
        "split": val.split,
        "n_val": int(len(out["labels"])),
        **validation_errors(out),
    }


# --------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------


@dataclass
class Prediction:
    path: str
    top: list  # [(class name, probability)], most probable first


def read_image(path, size: int) -> np.ndarray:
    """An image file as the model's input: the data pipeline's §2 decoding. A file
    larger than training reads (`reproduce.data.decode.MAX_IMAGE_BYTES`) is refused
    before any byte of it is read: a wrong path (a disk image, a video) would fill
    the memory."""
    try:
        with open(path, "rb") as f:
            too_big = dec.too_big(
                os.fstat(f.fileno()).st_size,
                f"{path}",
                "Check the path, or give a smaller copy of the image (JPEG, PNG or WebP).",
            )
            if too_big:
                raise RunError(too_big)
            data = f.read()
    except OSError as e:
        raise RunError(f"{path}: cannot open it ({e.strerror or e}); check the path.") from None
    try:
        return decode_image(data, size)
    except Exception as e:  # Pillow raises several types; any of them means this file
        raise RunError(
            f"{path}: not a readable image ({type(e).__name__}: {e}). Give a JPEG, PNG or WebP file."
        ) from None


def predict_images(loaded: Loaded, paths: Sequence, top: int = TOP, batch_size: int = 64):
    """([Prediction] for the readable images, [RunError] for the others).

    Each prediction lists min(top, number of classes) classes.
    """
    k = min(int(top), len(loaded.class_names))
    preds, errors = [], []
    for start in range(0, len(paths), batch_size):
        good, images = [], []
        for p in paths[start : start + batch_size]:
            try:
                images.append(read_image(p, loaded.image_size))
                good.append(p)
            except RunError as e:
                errors.append(e)
        if not images:
            continue
        probs = np.asarray(loaded.model.predict(np.stack(images), verbose=0), np.float64)
        for p, row in zip(good, probs):
            order = np.argsort(-row, kind="stable")[:k]
            preds.append(Prediction(str(p), [(loaded.class_names[i], float(row[i])) for i in order]))
    return preds, errors


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------


EXPORT_TMP = ".export-"  # `.<target>.export-<pid>-<random>`: an export being written


def _check_export_target(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(
            f"--savedmodel {out_dir}: that is a file, and a SavedModel is a folder. Give "
            "the path of a new folder (it is created), or remove the file."
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise RunError(
            f"--savedmodel {out_dir}: the folder is not empty (an earlier export?). Give "
            "--force to replace it (make export ... FORCE=1), or another folder."
        )


def _remove_stale_exports(out_dir: Path) -> None:
    """Temp folders of exports whose process is gone (killed half-way)."""
    prefix = f".{out_dir.name}{EXPORT_TMP}"
    for p in out_dir.parent.glob(prefix + "*"):
        pid = p.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def export_savedmodel(loaded: Loaded, out_dir, force: bool = False) -> Path:
    """A TensorFlow SavedModel for TF Serving / TFLite, through Keras' `model.export`
    (either backend; JAX converts through jax2tf).

    Its `serve` signature takes uint8 (batch, S, S, 3) and returns the probabilities.
    It is written into a temporary folder beside `out_dir` and renamed into place,
    so a killed export never leaves a half-written SavedModel where a server would
    load it. A non-empty `out_dir` is replaced only with `force`.
    """
    out_dir = Path(out_dir).absolute()
    _check_export_target(out_dir, force)
    # On JAX, Keras converts the model with jax2tf: TensorFlow must be installed.
    if importlib.util.find_spec("tensorflow") is None:
        raise RunError(
            "exporting a SavedModel needs TensorFlow; install it "
            "(pip install tensorflow) or export on a machine that has it."
        )
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_exports(out_dir)
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}{EXPORT_TMP}{os.getpid()}-"))
    except OSError as e:
        raise RunError(
            f"--savedmodel {out_dir}: cannot write in {out_dir.parent} ({e.strerror or e}). "
            "Give a folder you can write to."
        ) from None
    old = None
    try:
        loaded.model.export(str(tmp), format="tf_saved_model", verbose=False)
        as_created(tmp)  # mkdtemp makes it private
        if out_dir.is_dir() and any(out_dir.iterdir()):  # force: set the old one aside
            old = out_dir.with_name(f".{out_dir.name}{EXPORT_TMP}{os.getpid()}-old")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)  # over a missing or empty folder
    except Exception as e:
        # TensorFlow's own file errors (tf.errors.OpError) are not OSErrors.
        if not isinstance(e, OSError) and not type(e).__module__.startswith("tensorflow"):
            raise
        if old is not None and not out_dir.exists():
            os.replace(old, out_dir)  # put the previous export back
            old = None
        raise RunError(
            f"--savedmodel {out_dir}: writing the SavedModel failed "
            f"({getattr(e, 'strerror', None) or e}); "
            f"nothing was left there. Check the folder's permissions and free space."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------------------
# The commands (python -m reproduce evaluate / predict / export)
# --------------------------------------------------------------------------------------


def command(args) -> int:
    """Run one of the commands; a bad run directory, image or data source prints
    its message and returns 1."""
    try:
        return {"evaluate": _evaluate_cmd, "predict": _predict_cmd, "export": _export_cmd}[args.cmd](args)
    except (RunError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _evaluate_cmd(args) -> int:
    res = evaluate_run(args.run_dir, args.data)
    own = args.data is None
    stored = runs.load_run(args.run_dir).result if own else {}
    print(f"{args.run_dir}: {res['n_val']} images of {res['source']}, split {res['split']!r}")
    print(f"{'':13s}{'top-1 error':>12s}{'top-5 error':>13s}")
    for label, suffix in (("centre crop", ""), ("ten views", "_10view")):
        top1, top5 = res[f"val_top1_err{suffix}"], res[f"val_top5_err{suffix}"]
        line = f"{label:13s}{100 * top1:11.2f}%{100 * top5:12.2f}%"
        s1, s5 = stored.get(f"val_top1_err{suffix}"), stored.get(f"val_top5_err{suffix}")
        if s1 is not None:
            line += f"   result.json: {100 * s1:.2f}% {100 * s5:.2f}%"
        print(line)
    precision = stored.get("precision")
    if (
        own
        and precision not in (None, "float32")
        and any(stored.get(k) is not None and abs(stored[k] - v) > 1e-9 for k, v in res.items() if k.startswith("val_"))
    ):
        print(
            f"(the run trained and was evaluated in {precision}; model.keras computes in "
            "float32, so a few images may be classified differently)"
        )
    return 0


def _predict_cmd(args) -> int:
    if args.top < 1:
        raise RunError(f"--top={args.top} asks for no classes; give 1 or more (default {TOP})")
    loaded = load(args.run_dir)
    if args.top > len(loaded.class_names):
        print(f"(the model has {len(loaded.class_names)} classes: showing all of them)", file=sys.stderr)
    preds, errors = predict_images(loaded, args.images, top=args.top)
    for p in preds:
        print(p.path)
        for name, prob in p.top:
            print(f"  {100 * prob:6.2f}%  {name}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def _export_cmd(args) -> int:
    run_dir = Path(args.run_dir)
    finished_run(run_dir)
    if args.savedmodel:  # before any work: a bad target is known at once
        _check_export_target(Path(args.savedmodel).absolute(), getattr(args, "force", False))
    if all((run_dir / f).is_file() for f in (runs.MODEL, runs.CLASSES)):
        print(f"{run_dir / runs.MODEL} is there already")
    else:
        write_model_from_state(run_dir)
        print(f"wrote {run_dir / runs.MODEL} and {runs.CLASSES} from the training state")
    loaded = load(run_dir)
    if args.savedmodel:
        out = export_savedmodel(loaded, args.savedmodel, force=getattr(args, "force", False))
        s = loaded.image_size
        print(
            f"wrote the SavedModel {out}: signature 'serve', uint8 (batch, {s}, {s}, 3) RGB "
            f"-> probabilities of the {len(loaded.class_names)} classes of {run_dir / runs.CLASSES}"
        )
    return 0
