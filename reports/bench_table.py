"""The report's last section: the throughput benchmark's table, from the runs
root's bench.json, read through `reproduce.benchfile` (the owner of its format)."""

from __future__ import annotations

from pathlib import Path

from reports import document
from reproduce import benchfile


def section(root: Path) -> list:
    """The section's blocks; none when the runs root has no bench.json. A file that
    cannot be read is said in the section, not raised: a bad bench file must not
    break the report."""
    p = Path(root) / benchfile.FILE_NAME
    if not p.exists():
        return []
    blocks = [document.Heading(1, "Throughput benchmark (bench.json)")]
    try:
        items = benchfile.read(p).table()
        cols = []
        for it in items:
            for k, v in it.items():
                if k not in cols and (v is None or isinstance(v, (str, int, float, bool))):
                    cols.append(k)
        cols = sorted(cols, key=lambda k: (k != "name", "image" not in k.lower(), cols.index(k)))[:9]
        if not items or not cols:
            return blocks + [document.Para("bench.json holds no table of results.")]

        def fmt(v):
            return f"{v:.1f}" if isinstance(v, float) else ("" if v is None else str(v))

        blocks.append(document.Table(cols, [[fmt(it.get(k)) for k in cols] for it in items]))
    except Exception as e:  # tolerant by design: a bad bench file must not break the report
        blocks.append(document.Para(f"bench.json could not be read: {type(e).__name__}: {e}"))
    return blocks
