"""The README's results block: the report's summary table and where its numbers
come from, written between README_BEGIN and README_END (make publish:
python -m reports --readme README.md); the rest of the file is left as it is."""

from __future__ import annotations

from pathlib import Path

from reports import analysis, collect, document
from reports.report import Report
from reports.sections import summary_table
from reports.text import code, distinct, duration
from reproduce.files import atomic_write_text

README_BEGIN = "<!-- results: written by `make publish` (python -m reports --readme) from results/; do not edit -->"
README_END = "<!-- /results -->"


def _provenance(an: analysis.PresetAnalysis) -> str:
    """One line: where a preset's numbers come from."""
    runs = [r for r in an.runs if collect.is_counted(r)]
    if not runs:
        return f"`{an.preset}`: no finished runs."
    bg = an.baseline_group()
    ref = (bg.counted or bg.runs)[0] if bg is not None and (bg.counted or bg.runs) else runs[0]
    wall = sum(float(r.result.get("wall_time_s") or 0) for r in runs)
    dates = sorted(collect.run_date(r)[:10] for r in runs if collect.run_date(r))
    precisions = distinct(r.result.get("precision") or r.env.get("precision") for r in runs)
    return (
        f"`{an.preset}`: {collect.dataset_name(ref)}; {len(runs)} finished run{'s' if len(runs) != 1 else ''}, "
        f"seeds {', '.join(map(str, sorted({r.seed for r in runs})))}; "
        f"{distinct(str(r.env.get('device')) for r in runs)}, "
        f"{distinct(r.env.get('backend') for r in runs)}, {precisions}; "
        f"{duration(wall)} of training and evaluation; "
        + (dates[0] if dates and dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}" if dates else "undated")
        + "."
    )


def update_readme(readme: Path, report: Report, report_link: str) -> bool:
    """Replace the block between README_BEGIN and README_END in `readme` with the
    report's summary table and where its numbers come from; False if the file has
    no such block (nothing is written then)."""
    current = Path(readme).read_text()
    if README_BEGIN not in current or README_END not in current:
        return False
    head, rest = current.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    doc = document.Document("")
    unrun: dict = {}
    table = summary_table(report.analyses, unrun)
    if table:
        doc.add(*table[1:])  # without its heading: the README has its own
    else:
        doc.add(document.Para("No claim has finished runs in both arms yet."))
    if unrun:
        doc.add(
            document.Para(
                "Not measured yet (an arm has no finished run): "
                + "; ".join(f"`{p}`: " + ", ".join(code(n) for n in names) for p, names in unrun.items())
                + "."
            )
        )
    doc.add(document.Bullets([_provenance(an) for an in report.analyses.values()]))
    doc.add(
        document.Para(
            f"The whole report: [{report_link}/report.md]({report_link}/report.md) "
            f"([PDF]({report_link}/report.pdf)); per-run and per-claim tables: "
            f"[runs.csv]({report_link}/runs.csv), [claims.csv]({report_link}/claims.csv)."
        )
    )
    body = document.to_markdown(doc).strip()
    body = body.split("\n", 1)[1].strip() if body.startswith("# ") or body.startswith("#\n") else body
    atomic_write_text(readme, head + README_BEGIN + "\n" + body + "\n" + README_END + tail)
    return True
