"""The report generator: a pure function of run directories.

    python -m reports [--runs RUNS_ROOT] [--out OUT_DIR] [--preset P]

writes ``report.md``, ``report.pdf`` (the same content), ``figures/*.png`` and,
for pandas, ``runs.csv`` and ``claims.csv``; the output folder is built aside and
replaced as a whole.
It reads runs only through `reproduce.runs`, the claims from
`ablations.registry` and how each kind of ablation is compared and shown from
`ablations.kinds`; it never imports Keras, TensorFlow or JAX.

    from reports import build_report
    rep = build_report("runs", "runs/report")      # -> reports.report.Report
    rep.analyses["imagenette"].comparison("no_lrn").rows[0].seed_ci

Modules: `stats` (intervals, bootstrap, Bonferroni correction and simultaneous intervals, detectable effects,
verdicts, epochs to target), `collect` (grouping runs by preset/label/fingerprint,
data set and class count), `measures` (the rows of a comparison and the per-run values
they are made of), `analysis` (a preset's comparisons, each made by its ablation's kind,
and their tests), `figures` (PNG plots), `document` (Markdown and PDF rendering), `text`
(how numbers are written), `export` (the CSV tables), `sections` (the report's sections),
`bench_table` (the benchmark's section), `folder_swap` (the output folder, replaced whole),
`report` (the entry point), `readme` (the README's results block).
"""

__all__ = ["build_report", "Report"]


def __getattr__(name: str):
    # `reports.report` is loaded when first asked for, not with the package: the
    # ablation kinds (ablations.kinds) use the low-level modules (stats, collect,
    # measures, text, figures), and reports.report imports the kinds (through
    # reports.analysis and reports.sections).
    if name in __all__:
        from reports import report

        return getattr(report, name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
