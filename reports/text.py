"""How the report writes numbers, verdicts and figures into its blocks.

Errors are fractions in the analysis and percentages or points here; ratios are
written "x5.40". Shared by `reports.sections` and the kinds' report blocks
(`ablations.kinds`).
"""

from __future__ import annotations

import math
import shlex
from collections import Counter
from pathlib import Path

from reports import document, figures, measures, stats
from reproduce.runs import format_duration as duration  # noqa: F401  (for the report's blocks)


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def pts(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.{digits}f}"


def mean_sd_pct(values: dict) -> str:
    m, sd, n = stats.mean_sd(list(values.values()))
    if n == 0:
        return "n/a"
    return f"{pct(m)} ± {pct(sd)}" if n >= 2 else f"{pct(m)} (n=1)"


def ci_pts(ci) -> str:
    return f"[{pts(ci.lo)}, {pts(ci.hi)}]" if ci is not None and ci.ok else "n/a"


def n_text(base: dict, variant: dict) -> str:
    if set(base) == set(variant):
        return str(len(base))
    return f"{len(base)}/{len(variant)}"


def num(x, fmt="{:.1f}") -> str:
    return "n/a" if x is None or not math.isfinite(x) else fmt.format(x)


def code(s) -> str:
    return f"`{s}`"


def command_text(cmd) -> str:
    if cmd is None:
        return ""
    if isinstance(cmd, (list, tuple)):
        return shlex.join(str(c) for c in cmd)
    return str(cmd)


def distinct(values) -> str:
    c = Counter(v for v in values if v not in (None, ""))
    if not c:
        return "not recorded"
    return "; ".join(f"{v} ({n} run{'s' if n > 1 else ''})" if len(c) > 1 else str(v) for v, n in c.most_common())


def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def ratio(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"x{x:.2f}"


def level_text(row: measures.Row) -> str:
    """The level of the interval beside a verdict, e.g. "99.4% simultaneous"."""
    if math.isclose(row.level, measures.LEVEL):
        return f"{row.level:.0%}"
    return f"{100 * row.level:.1f}% simultaneous"


def verdict_text(row: measures.Row) -> str:
    return row.verdict + (" (fragile)" if row.fragile else "")


def measured_text(row: measures.Row, with_method: bool = False) -> str:
    """The measured effect and the interval the test uses, e.g. "+2.50 [+1.10, +3.90]"."""
    if row.is_ratio:
        ci = row.ci
        exp = lambda x: math.exp(x) if x is not None and math.isfinite(x) else stats.NAN  # noqa: E731
        text = ratio(exp(ci.estimate)) + (f" [{ratio(exp(ci.lo))}, {ratio(exp(ci.hi))}]" if ci.ok else " (no interval)")
        return ("at least " + text) if row.lower_bound_only else text
    ci = row.ci
    text = pts(ci.estimate) + (f" [{pts(ci.lo)}, {pts(ci.hi)}]" if ci.ok else " (no interval)")
    if with_method and ci.ok and ci.method.startswith("bootstrap"):
        text += " (images)"
    return text


def mde_text(row: measures.Row) -> str:
    """The detectable effect on the printed scale (points, or a ratio)."""
    if not math.isfinite(row.mde):
        return "n/a"
    return ratio(math.exp(row.mde)) if row.is_ratio else f"{100 * row.mde:.2f}"


def seeds_text(row: measures.Row) -> str:
    if row.seeds_needed is None:
        return "n/a"
    return f"> {row.seeds_needed - 1}" if row.seeds_needed > 10_000 else str(row.seeds_needed)


def epochs_pair(b: float, v: float) -> str:
    fmt = lambda x: f"{x:g}" if float(x).is_integer() else f"{x:.2f}"  # noqa: E731
    return f"({fmt(b)}, {fmt(v)})"


def figure_block(fig: figures.FigureFile | None, out_dir: Path, caption: str) -> document.Figure | None:
    """A figure written under `out_dir`, as a block of the document (None: no figure)."""
    if fig is None:
        return None
    return document.Figure(fig.path, str(fig.path.relative_to(out_dir)), caption, fig.width_in, fig.height_in)
