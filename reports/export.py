"""Tidy tables beside the report, for pandas users: runs.csv and claims.csv.

    import pandas as pd
    runs = pd.read_csv("runs/report/runs.csv")      # one row per run
    claims = pd.read_csv("runs/report/claims.csv")  # one row per claim and metric

Errors and deltas are in percentage points, ratios as ratios (column `unit`).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from reports import collect, stats

RUN_COLUMNS = [
    "preset",
    "label",
    "seed",
    "fingerprint",
    "status",
    "counted",
    "epochs",
    "epochs_configured",
    "val_top1_err",
    "val_top5_err",
    "val_top1_err_10view",
    "val_top5_err_10view",
    "train_top1_err",
    "train_top1_err_clean",
    "epochs_to_target",
    "censored",
    "wall_time_s",
    "images_per_s",
    "dataset",
    "num_classes",
    "device",
    "host",
    "processor",
    "backend",
    "date",
    "path",
]
_POINTS = (
    "val_top1_err",
    "val_top5_err",
    "val_top1_err_10view",
    "val_top5_err_10view",
    "train_top1_err",
    "train_top1_err_clean",
)
CLAIM_COLUMNS = [
    "preset",
    "ablation",
    "section",
    "metric",
    "role",
    "unit",
    "paper",
    "bound",
    "measured",
    "ci_low",
    "ci_high",
    "ci_method",
    "level",
    "p",
    "p_adjusted",
    "family",
    "mde",
    "seeds_needed",
    "n_base",
    "n_variant",
    "direction",
    "size",
    "verdict",
    "fragile",
    "withheld_because",
    "not_measurable_because",
    "setting",
    "caveat",
]


def _cell(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, sort_keys=True)
    return v


def _write(path: Path, columns: list, rows: list) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in columns})


def run_rows(analyses: dict, damaged: list, root) -> tuple[list, list]:
    """(rows, config columns): every run of every analysed preset, with each
    configuration key that differs from its preset's baseline in some run."""
    rows, keys = [], []
    for preset, an in analyses.items():
        bg = an.baseline_group()
        runs = sorted(an.runs, key=lambda r: (r.label, r.seed, str(r.path)))
        ref = bg.flat if bg is not None else (collect.flat_config(runs[0]) if runs else {})
        for r in runs:
            flat = collect.flat_config(r)
            res, env = r.result or {}, r.env
            row = {
                "preset": preset,
                "label": r.label,
                "seed": r.seed,
                "fingerprint": collect.fingerprint(r),
                "status": collect.run_status(r),
                "counted": collect.is_counted(r),
                "epochs": res.get("epochs", len(r.metrics)),
                "epochs_configured": r.config.get("train", {}).get("epochs"),
                "epochs_to_target": res.get("epochs_to_target"),
                "censored": res.get("censored"),
                "wall_time_s": res.get("wall_time_s"),
                "images_per_s": res.get("images_per_s"),
                "dataset": collect.dataset_name(r),
                "num_classes": collect.num_classes(r),
                "device": env.get("device"),
                "host": env.get("host"),
                "processor": env.get("processor"),
                "backend": env.get("backend") or env.get("keras_backend"),
                "date": env.get("date"),
                "path": collect.relpath(r.path, root),
            }
            for k in _POINTS:
                v = res.get(k)
                row[k] = 100.0 * float(v) if isinstance(v, (int, float)) else None
            for k, v in flat.items():
                if v != ref.get(k) and k not in keys:
                    keys.append(k)
            row["_flat"] = flat
            rows.append(row)
    for row in rows:
        flat = row.pop("_flat")
        row.update({k: flat.get(k) for k in keys})
    for e in damaged:
        rows.append({"status": f"damaged: {e.problem}", "counted": False, "path": collect.relpath(e.path, root)})
    return rows, sorted(keys)


def claim_rows(analyses: dict) -> list:
    rows = []
    for preset, an in analyses.items():
        for comp in an.comparisons:
            c = comp.claim
            for r in comp.rows:
                ratio = r.is_ratio
                shown = r.ci  # the interval beside the verdict (log epochs for a ratio)
                scale = (lambda x: x) if ratio else (lambda x: 100.0 * x)  # noqa: E731
                if ratio:
                    shown = stats.Interval(
                        *(math.exp(x) if math.isfinite(x) else x for x in (shown.estimate, shown.lo, shown.hi)),
                        shown.method,
                    )
                mde = (math.exp(r.mde) if ratio else 100.0 * r.mde) if math.isfinite(r.mde) else None
                rows.append(
                    {
                        "preset": preset,
                        "ablation": comp.name,
                        "section": c.section,
                        "metric": r.label or r.metric,
                        "role": r.role,
                        "unit": "ratio" if ratio else "points",
                        "paper": None if r.claimed is None else scale(r.claimed),
                        "bound": r.bound,
                        "measured": scale(shown.estimate),
                        "ci_low": scale(shown.lo),
                        "ci_high": scale(shown.hi),
                        "ci_method": r.ci.method,
                        "level": r.level,
                        "p": None if r.withheld else r.p,
                        "p_adjusted": r.p_adj,
                        "family": an.family if math.isfinite(r.p_adj) else None,
                        "mde": mde,
                        "seeds_needed": r.seeds_needed,
                        "n_base": len(r.base),
                        "n_variant": len(r.variant),
                        "direction": r.direction_verdict,
                        "size": r.magnitude,
                        "verdict": r.verdict,
                        "fragile": r.fragile,
                        "withheld_because": r.withheld_why if r.withheld else "",
                        "not_measurable_because": r.unmeasurable,
                        "setting": comp.setting,
                        "caveat": c.caveat,
                    }
                )
    return rows


def write_csvs(out: Path, analyses: dict, damaged: list, root) -> tuple[Path, Path]:
    rows, keys = run_rows(analyses, damaged, root)
    runs_csv, claims_csv = Path(out) / "runs.csv", Path(out) / "claims.csv"
    _write(runs_csv, RUN_COLUMNS + keys, rows)
    _write(claims_csv, CLAIM_COLUMNS, claim_rows(analyses))
    return runs_csv, claims_csv
