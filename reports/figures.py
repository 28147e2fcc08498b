"""The report's figures (matplotlib with the Agg backend, seaborn styling).

Every function takes analysed data, writes one PNG and returns a `FigureFile`
(path and size in inches, so the PDF can scale it), or None when there is nothing
to draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DPI = 130


@dataclass(frozen=True)
class FigureFile:
    path: Path
    width_in: float
    height_in: float


def styled_pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.05)
    return plt, sns


def wrap_title(text: str, width_in: float, fontsize: float) -> str:
    """`text` broken into lines that fit `width_in` inches at `fontsize` points
    (an average Helvetica/DejaVu character is about 0.55 em wide), so a long title
    is never cut at the figure's edges."""
    import textwrap

    chars = max(20, int(0.92 * width_in * 72 / (0.55 * fontsize)))
    return textwrap.fill(text, chars)


def save(fig, path: Path) -> FigureFile:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = fig.get_size_inches()
    fig.savefig(path, dpi=DPI, bbox_inches=None, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return FigureFile(path, float(w), float(h))


def curve_frame(runs: list, column: str, arm: str):
    import pandas as pd

    rows = []
    for r in runs:
        for m in r.metrics:
            v = m.get(column)
            if v is None or m.get("epoch") is None:
                continue
            rows.append({"epoch": int(m["epoch"]) + 1, "err": 100.0 * float(v), "seed": r.seed, "arm": arm})
    return pd.DataFrame(rows, columns=["epoch", "err", "seed", "arm"])


def draw_band(ax, df, color, linestyle, label, seeds_too=False):
    """Mean over seeds per epoch with a +-1 sd band, drawn only over the epochs every
    seed reached (runs that stop early would otherwise bend the mean); with
    `seeds_too` (or where the seeds' lengths differ) each seed is also drawn thin."""
    if df.empty:
        return
    n_seeds = df.seed.nunique()
    g = df.groupby("epoch")["err"]
    mean, sd, n = g.mean(), g.std(ddof=1), g.count()
    full = n == n_seeds
    ragged = not full.all()
    if seeds_too or ragged:
        for _, d in df.groupby("seed"):
            d = d.sort_values("epoch")
            ax.plot(d.epoch, d.err, color=color, linestyle=linestyle, linewidth=0.8, alpha=0.55)
    ax.plot(mean.index[full], mean.values[full], color=color, linestyle=linestyle, linewidth=2.0, label=label)
    if n_seeds >= 2 and full.any():
        x = mean.index[full]
        ax.fill_between(x, (mean - sd)[full], (mean + sd)[full], color=color, alpha=0.18, linewidth=0)


def integer_epochs(ax):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def learning_curves(comparisons: list, path: Path, title: str) -> FigureFile | None:
    """Validation top-1 error vs epoch, baseline (solid) vs variant (dashed), per ablation."""
    panels = [c for c in comparisons if c.curves and c.pair.base is not None and c.pair.variant is not None]
    if not panels:
        return None
    plt, sns = styled_pyplot()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows + 0.5), squeeze=False, sharey=False)
    colors = sns.color_palette("colorblind", 2)
    for ax, comp in zip(axes.flat, panels):
        b = curve_frame(comp.pair.base.counted, "val_top1_err", comp.base_label)
        v = curve_frame(comp.pair.variant.counted, "val_top1_err", comp.variant_label)
        draw_band(ax, b, colors[0], "-", f"{comp.base_label} (n={b.seed.nunique()})")
        draw_band(ax, v, colors[1], "--", f"{comp.variant_label} (n={v.seed.nunique()})")
        ax.set_title(comp.name, fontsize=10)
        ax.set_xlabel("epoch")
        integer_epochs(ax)
        ax.set_ylabel("val top-1 error (%)")
        ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(wrap_title(title + " (mean over seeds, band = +-1 sd)", fig.get_size_inches()[0], 11), fontsize=11)
    fig.tight_layout()
    return save(fig, path)


# The delta chart's axis: effects of a few points are what most claims are about
# (§3.3: LRN 1.4 points, §3.4: overlapping pools 0.4 points), so the axis always spans
# at least +-DELTA_LEAST points and never more than +-DELTA_CLIP: a larger effect
# (a variant that failed to learn: +30 points) is drawn at the edge with its value
# written, instead of squashing every other row into a line at 0.
DELTA_LEAST = 5.0
DELTA_CLIP = 10.0


def delta_limit(values, least: float = DELTA_LEAST, clip: float = DELTA_CLIP) -> float:
    """Half-width of the delta axis, in points: the largest |value| of at most `clip`
    (values beyond are clipped), at least `least`, plus a margin."""
    inside = [abs(v) for v in values if v is not None and math.isfinite(v) and abs(v) <= clip]
    return 1.08 * max([least, *inside])


def _measured(r) -> bool:
    """Whether a row has anything to draw (a measured delta or an interval)."""
    return math.isfinite(r.ci.estimate) or r.ci.ok or (r.image_ci is not None and r.image_ci.ok)


def delta_chart(rows: list, path: Path, title: str) -> FigureFile | None:
    """One point per (ablation, metric): the seed CI (thick), the image bootstrap CI
    (thin, below), and the paper's claimed delta (red x). Rows with nothing measured
    are left out, and with none left no figure is drawn. The axis is
    `delta_limit` of the values: what lies beyond is drawn at the edge as a
    triangle, its value written beside it."""
    rows = [r for r in rows if _measured(r)]
    panels = {
        "top-1 error, gap, early error": [r for r in rows if r.metric in ("top-1", "gap", "early")],
        "top-5 error": [r for r in rows if r.metric == "top-5"],
    }
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    plt, sns = styled_pyplot()
    height = max(2.6, 1.4 + 0.42 * max(len(v) for v in panels.values()))  # room for a two-row legend
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), height), squeeze=False)
    blue, orange = sns.color_palette("colorblind", 2)
    any_clipped = False
    for ax, (name, rs) in zip(axes.flat, panels.items()):
        values = []
        for r in rs:
            values += [r.ci.estimate, r.ci.lo, r.ci.hi] if r.ci.ok else [r.ci.estimate]
            if r.image_ci is not None and r.image_ci.ok:
                values += [r.image_ci.lo, r.image_ci.hi]
            if r.claimed is not None:
                values.append(r.claimed)
        lim = delta_limit([100 * v for v in values if v is not None])
        edge = 0.965 * lim  # markers sit just inside the axis

        def at(x, edge=edge):
            return max(-edge, min(edge, x))

        ys = np.arange(len(rs))[::-1]
        ax.axvline(0, color="0.3", linewidth=0.8)
        for y, r in zip(ys, rs):
            ci = r.ci  # the interval the test uses (seeds, or images when the seeds show no spread)
            est = 100 * ci.estimate
            clipped = []  # the values drawn at an edge, written out
            if math.isfinite(est):
                if abs(est) <= edge:
                    ax.plot(est, y, "o", color=blue, zorder=3)
                else:
                    ax.plot(at(est), y, ">" if est > 0 else "<", color=blue, markersize=9, zorder=3, clip_on=False)
                    clipped.append(
                        (est, f"{est:+.1f}" + (f" [{100 * ci.lo:+.1f}, {100 * ci.hi:+.1f}]" if ci.ok else ""))
                    )
            if ci.ok:
                lo, hi = 100 * ci.lo, 100 * ci.hi
                ax.hlines(y, at(lo), at(hi), color=blue, linewidth=3, zorder=2)
                if abs(est) <= edge:  # an interval running off the axis: its end written
                    clipped += [(v, f"{v:+.1f}") for v in (lo, hi) if abs(v) > edge]
            if r.image_ci is not None and r.image_ci.ok:
                ax.hlines(y - 0.22, at(100 * r.image_ci.lo), at(100 * r.image_ci.hi), color=orange, linewidth=1.2)
            if r.claimed is not None:
                c = 100 * r.claimed
                ax.plot(at(c), y, "x", color="crimson", markersize=8, mew=2, zorder=4)
                if abs(c) > edge:
                    clipped.append((c, f"paper {c:+.1f}"))
            for v, text in clipped:
                any_clipped = True
                ax.annotate(
                    text,
                    (at(v), y),
                    xytext=(-6 if v > 0 else 6, 5),
                    textcoords="offset points",
                    ha="right" if v > 0 else "left",
                    va="bottom",
                    fontsize=7,
                    color=blue,
                )
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-0.7, len(rs) - 0.4)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{r.ablation}" + (f" ({r.metric})" if r.metric in ("gap", "early") else "") for r in rs])
        ax.set_xlabel("variant - baseline (points)")
        ax.set_title(name, fontsize=10)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=blue, marker="o", linewidth=3, label="measured, the interval its test uses"),
        Line2D([], [], color=orange, linewidth=1.2, label="95% bootstrap CI over images"),
        Line2D([], [], color="crimson", marker="x", linestyle="", mew=2, label="paper's claimed delta"),
    ]
    if any_clipped:
        handles.append(
            Line2D(
                [],
                [],
                color=blue,
                marker=">",
                linestyle="",
                markersize=8,
                label=f"beyond \u00b1{DELTA_CLIP:g} points: at the edge, value written",
            )
        )
    ncol = min(len(handles), 2 * len(panels))  # one panel: two columns, so the legend fits its width
    legend_rows = math.ceil(len(handles) / ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(wrap_title(title, fig.get_size_inches()[0], 11), fontsize=11)
    fig.tight_layout(rect=(0, min(0.4, (0.12 + 0.2 * legend_rows) / height), 1, 1))
    return save(fig, path)


def kernel_mosaic(kernels: dict, cols: int = 16, pad: int = 1) -> tuple[np.ndarray, list]:
    """conv1 kernels as one RGB image like the paper's Fig. 3.

    kernels: {"a": (kh, kw, c, n), "b": ...} or {"single": ...}. Each kernel is
    min-max normalized to [0, 1] on its own; tower "a" fills the top rows, tower
    "b" the rows below (separated by a blank row). Returns (image, [(tower, first
    row pixel, n kernels)]).
    """
    towers = sorted(kernels) if set(kernels) != {"single"} else ["single"]
    blocks, spans = [], []
    kh, kw = None, None
    for t in towers:
        k = np.asarray(kernels[t], dtype=float)
        if k.ndim != 4:
            continue
        kh, kw, c, n = k.shape
        k = k[:, :, :3, :] if c >= 3 else np.repeat(k[:, :, :1, :], 3, axis=2)
        lo = k.min(axis=(0, 1, 2), keepdims=True)
        hi = k.max(axis=(0, 1, 2), keepdims=True)
        rng = np.where(hi > lo, hi - lo, 1.0)
        k = np.where(hi > lo, (k - lo) / rng, 0.5)
        ncol = min(cols, n)
        nrow = math.ceil(n / ncol)
        block = np.ones((nrow * (kh + pad) + pad, ncol * (kw + pad) + pad, 3))
        for i in range(n):
            r, c_ = divmod(i, ncol)
            y, x = pad + r * (kh + pad), pad + c_ * (kw + pad)
            block[y : y + kh, x : x + kw] = k[:, :, :, i]
        blocks.append((t, block, n))
    if not blocks:
        return np.ones((1, 1, 3)), []
    width = max(b.shape[1] for _, b, _ in blocks)
    out, y = [], 0
    for i, (t, b, n) in enumerate(blocks):
        if b.shape[1] < width:
            b = np.concatenate([b, np.ones((b.shape[0], width - b.shape[1], 3))], axis=1)
        if i:
            gap = np.ones(((kh or 1) // 2 + 1, width, 3))
            out.append(gap)
            y += gap.shape[0]
        spans.append((t, y, n))
        out.append(b)
        y += b.shape[0]
    return np.concatenate(out, axis=0), spans


def conv1_grid(kernels: dict, path: Path, title: str) -> FigureFile | None:
    if not kernels:
        return None
    img, spans = kernel_mosaic(kernels)
    if not spans:
        return None
    plt, _ = styled_pyplot()
    h, w = img.shape[:2]
    fw = 9.0
    fh = max(1.6, fw * h / w + 0.7)
    fig, ax = plt.subplots(figsize=(fw, fh))
    ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for sp in ax.spines.values():
        sp.set_visible(False)
    for t, y, n in spans:
        name = "one tower" if t == "single" else f"tower {t}"
        ax.text(-2, y + 4, f"{name}\n({n})", ha="right", va="top", fontsize=8)
    ax.set_title(wrap_title(title, fig.get_size_inches()[0], 10), fontsize=10)
    fig.tight_layout()
    return save(fig, path)
