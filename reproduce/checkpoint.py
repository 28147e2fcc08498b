"""The resumable training state of a run: weights, optimizer slots and the
schedule's bookkeeping in one file (`reproduce.runs.state_path`), replaced
atomically once per completed epoch, so a kill -9 at any moment loses at most the
epoch in flight."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from reproduce import runs
from reproduce.files import replacing
from reproduce.runs import RunConflict


def state_variables(model) -> list:
    """The model's variables in the order the state file stores them."""
    return list(model.trainable_variables) + list(model.non_trainable_variables)


def _array(v) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v)


def save_state(run_dir, model, info: dict) -> None:
    """Weights, optimizer slots and `info` in one file, replaced atomically."""
    arrays = {f"m{i:04d}": _array(v) for i, v in enumerate(state_variables(model))}
    arrays.update({f"o{i:04d}": _array(v) for i, v in enumerate(model.optimizer.variables)})
    arrays["info"] = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    with replacing(runs.state_path(run_dir), suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_state(run_dir, model) -> dict | None:
    """Restore weights and optimizer from the state file; returns its info or None."""
    p = runs.state_path(run_dir)
    if not p.exists():
        return None
    try:
        z = np.load(p)
        info = json.loads(bytes(z["info"]).decode())
    except Exception as e:  # a state file is written atomically; this is disk damage
        raise RunConflict(
            f"the training state {p} cannot be read ({e}). Delete it to restart the run "
            f"from scratch; metrics.csv will be rewritten."
        ) from None
    mvars = state_variables(model)
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    ovars = list(opt.variables)
    mkeys = sorted(k for k in z.files if k.startswith("m"))
    okeys = sorted(k for k in z.files if k.startswith("o"))
    if len(mkeys) != len(mvars) or len(okeys) != len(ovars):
        raise RunConflict(
            f"the saved state in {p} does not match this model ({len(mkeys)} saved "
            f"variables, {len(mvars)} expected). Was the code changed? Delete {Path(p).parent} "
            "to start over."
        )
    for k, v in zip(mkeys, mvars):
        v.assign(z[k].astype(v.dtype) if hasattr(v, "dtype") else z[k])
    for k, v in zip(okeys, ovars):
        v.assign(z[k])
    return info
