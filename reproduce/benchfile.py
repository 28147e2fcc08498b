"""The throughput benchmark's results file, ``bench.json``: the one module that owns
its format. `reproduce.bench` writes it through `write`; the report (and anything
else) reads it through `read`. Standard library only, so the report never loads
Keras.

Format (one JSON object)::

    {"tool": "reproduce.bench", "backend": ..., "device": ..., "date": ...,
     ...                                   the settings of the run (BenchFile.meta)
     "rows": [{...}, ...],                 one per measurement, every ROW_KEYS key and more
     "errors": [{...}, ...]}               one per failed measurement: ERROR_KEYS

By default the file lives in the runs root (``runs/bench.json``), where the
report looks for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from reproduce import runs

FILE_NAME = "bench.json"

#: Keys every result row has.
ROW_KEYS = (
    "backend",
    "device",
    "precision",
    "batch",
    "path",
    "images_per_s",
    "mfu",
    "steps",
    "date",
)
#: Keys every error entry has.
ERROR_KEYS = ("path", "variant", "precision", "batch", "label", "error")
#: The columns that describe a row in a short table (the report's).
TABLE_KEYS = (
    "path",
    "variant",
    "precision",
    "batch",
    "steps_per_execution",
    "images_per_s",
    "step_ms",
    "mfu",
    "device",
)


@dataclass
class BenchFile:
    meta: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)  # dicts with ROW_KEYS
    errors: list = field(default_factory=list)  # dicts with ERROR_KEYS

    def table(self) -> list[dict]:
        """The rows with their TABLE_KEYS only, in that order."""
        return [{k: row.get(k) for k in TABLE_KEYS} for row in self.rows]


def default_path() -> Path:
    """<runs root>/bench.json (the runs root: $REPRODUCE_RUNS or ./runs)."""
    return runs.default_root() / FILE_NAME


def write(path: os.PathLike, bench: BenchFile) -> None:
    """Replace `path` atomically with `bench`."""
    for row in bench.rows:
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"a bench row lacks {missing}: {row}")
    runs.atomic_write_json(path, {**bench.meta, "rows": bench.rows, "errors": bench.errors})


def read(path: os.PathLike) -> BenchFile:
    """The file at `path` (OSError if it cannot be read, ValueError if it is not a
    bench file)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("rows", []), list):
        raise ValueError(f"{path} is not a bench file (no list of rows)")
    meta = {k: v for k, v in data.items() if k not in ("rows", "errors")}
    return BenchFile(meta, list(data.get("rows", [])), list(data.get("errors", [])))
