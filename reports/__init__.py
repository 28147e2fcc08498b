"""The report generator: a pure function of run directories.

    python -m reports [--runs RUNS_ROOT] [--out OUT_DIR] [--preset P]

writes ``report.md``, ``report.pdf`` (the same content), ``figures/*.png`` and,
for pandas, ``runs.csv`` and ``claims.csv``; the output folder is built aside and
replaced as a whole.
It reads runs only through `reproduce.runs` and the claims from
`ablations.registry`; it never imports Keras, TensorFlow or JAX.

    from reports import build_report
    rep = build_report("runs", "runs/report")      # -> reports.report.Report
    rep.analyses["imagenette"].comparison("no_lrn").rows[0].seed_ci

Modules: `stats` (intervals, bootstrap, Bonferroni correction and simultaneous intervals, detectable effects,
verdicts, epochs to target), `collect` (grouping runs by preset/label/fingerprint,
data set and class count), `analysis` (the numbers), `figures` (PNG plots),
`document` (Markdown and PDF rendering), `export` (the CSV tables), `report`
(sections and the entry point).
"""

from reports.report import Report, build_report  # noqa: F401

__all__ = ["build_report", "Report"]
