"""Assemble the report: analysis -> sections -> report.md, report.pdf, figures/*.png,
runs.csv and claims.csv, built aside and swapped into the output folder whole.

The report is a pure function of the run directories (read through
`reproduce.runs`) and the registry's claims; it never imports training code.
The sections are written by `reports.sections`, the benchmark's table by
`reports.bench_table`; `reports.folder_swap` puts the finished folder in place,
and `reports.readme` copies the summary into the README.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ablations import registry
from reports import analysis, bench_table, collect, document, export, figures, folder_swap, sections
from reports.document import Document
from reports.text import code
from reproduce import runs

TITLE = "AlexNet reproduction report (Krizhevsky, Sutskever & Hinton, NIPS 2012)"

# What the report writes into its folder; the folder is replaced as a whole.
PRODUCTS = ("report.md", "report.pdf", "figures", "runs.csv", "claims.csv")
# Replaced last, one right after the other, where only the report's own entries
# are replaced (a folder that holds other things too): the pair a reader opens.
REPLACED_LAST = ("report.md", "report.pdf")


class ReportError(Exception):
    """A problem with the report's input or output folders, said in one line."""


@dataclass
class Report:
    out_dir: Path
    markdown: Path
    pdf: Path
    figures: list = field(default_factory=list)
    analyses: dict = field(default_factory=dict)  # preset -> analysis.PresetAnalysis
    document: Document | None = None
    damaged: list = field(default_factory=list)  # reproduce.runs.RunFileError of the runs left out
    runs_csv: Path | None = None
    claims_csv: Path | None = None


def build_report(runs_root=None, out_dir=None, preset: str | None = None, command: str | None = None) -> Report:
    """Write report.md, report.pdf, figures/*.png, runs.csv and claims.csv for the
    runs under `runs_root`.

    runs_root: default `reproduce.runs.default_root()`, which must exist; out_dir:
    default `<runs_root>/report`; preset: only this preset's section (it is written
    even with no runs, listing what is missing). A run with a damaged file is
    skipped and listed. The output folder is built aside and swapped in whole, so
    a reader never sees a report.md from one build beside a report.pdf from
    another. Returns a `Report` with the paths, the per-preset analyses and the
    damaged runs. Raises `ReportError` for a missing runs folder or an output
    folder that cannot be written.
    """
    # An empty --runs or --out (RUNS= with make) is unset, not the current folder.
    root = Path(runs_root) if runs_root not in (None, "") else runs.default_root()
    if not root.is_dir():
        raise ReportError(
            f"runs folder {root} "
            + ("is not a folder" if root.exists() else "does not exist")
            + ": pass the folder holding the run directories with --runs (or $REPRODUCE_RUNS)"
        )
    out = Path(out_dir) if out_dir not in (None, "") else root / "report"
    _check_out(out)
    if command is None:
        command = f"python -m reports --runs {shlex.quote(str(root))} --out {shlex.quote(str(out))}" + (
            f" --preset {preset}" if preset else ""
        )
    damaged: list = []
    grouped = collect.load(root, damaged)
    presets = [preset] if preset else collect.preset_order(grouped)
    analyses = {p: analysis.analyze_preset(p, grouped.get(p, {}), root) for p in presets if grouped.get(p) or preset}
    # The budget rule compares a preset with the others of its series: they are
    # analysed too when one preset's report is asked for, so its verdicts do not
    # depend on which presets are built.
    series = {q for ser in registry.BUDGET_SERIES if set(ser) & set(analyses) for q in ser}
    beside = {q: analysis.analyze_preset(q, grouped[q], root) for q in series - set(analyses) if grouped.get(q)}
    analysis.budget_limits({**analyses, **beside})

    try:
        build = folder_swap.new_folder(out)
    except OSError as e:
        raise ReportError(
            f"cannot write the report beside {out}: {e.strerror or e} ({e.filename or out.parent}); "
            "choose a writable folder with --out"
        ) from None
    held = folder_swap.hold(build)  # until the swap: a concurrent build does not take it for stale
    try:
        folder_swap.remove_stale(out)
        report = _write(build, root, command, preset, grouped, analyses, damaged)
        try:
            folder_swap.swap_in(build, out, PRODUCTS, last=REPLACED_LAST)
        except OSError as e:
            raise ReportError(
                f"cannot replace the report folder {out}: {e.strerror or e}; choose a writable folder with --out"
            ) from None
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    finally:
        os.close(held)
    report.out_dir, report.markdown, report.pdf = out, out / "report.md", out / "report.pdf"
    report.runs_csv, report.claims_csv = out / "runs.csv", out / "claims.csv"
    report.figures = [
        figures.FigureFile(out / f.path.relative_to(build), f.width_in, f.height_in) for f in report.figures
    ]
    return report


def _write(build: Path, root: Path, command: str, preset, grouped: dict, analyses: dict, damaged: list) -> Report:
    doc = document.Document(TITLE)
    report = Report(build, build / "report.md", build / "report.pdf", document=doc, analyses=analyses, damaged=damaged)
    doc.add(
        document.Para(
            f"Runs root: {code(collect.portable(str(root)))}. Built by "
            f"{code(collect.portable(command))} from the run directories alone "
            "(results, metrics, per-image correctness and kernels); it loads no training code. "
            "Tables for pandas: `runs.csv` (one row per run) and `claims.csv` (one row per claim and "
            "metric) beside this file."
        )
    )
    if not grouped:
        doc.add(
            document.Para(
                f"No runs found under {code(collect.portable(str(root)))} (no run directory with config.json)."
            )
        )
    elif preset and preset not in grouped:
        doc.add(
            document.Para(
                f"No runs of preset {code(preset)} under {code(collect.portable(str(root)))}; presets "
                f"present: {', '.join(code(p) for p in collect.preset_order(grouped))}."
            )
        )
    doc.add(*sections.summary_table(analyses))
    doc.add(*sections.damaged_runs(damaged, root))
    doc.add(*sections.other_code_runs(grouped, root))
    if len(analyses) > 1:
        doc.add(
            document.Para("Presets in this report (one section each): " + ", ".join(code(p) for p in analyses) + ".")
        )
    for p, an in analyses.items():
        doc.add(document.Heading(1, f"Preset {p}"))
        if not an.labels:
            doc.add(document.Para("No runs of this preset yet."))
        doc.add(sections.preset_summary(an))
        doc.add(*sections.what_was_run(an))
        doc.add(*sections.main_table(an))
        doc.add(*sections.overfitting(an))
        doc.add(*sections.figure_section(an, build, report.figures))
        doc.add(*sections.published_numbers(an))
        doc.add(*sections.commands(an, command))
        doc.add(*sections.completeness(an, root))
    doc.add(*bench_table.section(root))
    report.markdown.write_text(document.to_markdown(doc))
    document.to_pdf(doc, report.pdf)
    export.write_csvs(build, analyses, damaged, root)
    return report


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ReportError(f"report folder {out} is a file, not a folder: choose another with --out")
