"""``python -m experiments.perf``: the project's benchmark (`reproduce.bench`) over
net variants and extra paths, and plans of many such jobs in one process.

Takes every option of ``python -m reproduce bench``, and:

``--variant V ...``
    Variants of the net (`experiments.perf.variants.parse_variant`): project,
    lrn=vjp|bf16, towers=grouped|blockdiag|dense, conv1=s2d, no_augment, scan=K,
    unroll=U; join several with ``+``. Paths also include resident, e2e-resident.
``--plan FILE``
    A JSON list of jobs (dicts of `run_variants` arguments) run in this one process
    (XLA's autotuning results are reused across jobs), each given what is left of
    --time-budget; a failing row is recorded in the results file's "errors" and the
    rest go ahead. Options given on the command line (--small/--full, --batch,
    --steps, --warmup, --repeats, --precision) override the jobs'.
``--measure-peak``
    Time a bf16 8192^3 matmul first (JAX) and store its TFLOP/s in the file.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import keras

from experiments.perf.paths import anchors_note, measure_matmul_tflops, measures_for, skip_reason
from experiments.perf.variants import net_builder, parse_variant
from reproduce import bench, benchfile


def run_variants(variants=("project",), paths=None, verbose=True, data="", time_budget=None, **kwargs) -> list:
    """reproduce.bench.run for each variant, on the paths that apply to it, all
    within `time_budget` seconds."""
    backend = keras.backend.backend()
    t0 = time.perf_counter()
    rows = []
    for v in (parse_variant(x) if isinstance(x, str) else x for x in variants):
        left = time_budget - (time.perf_counter() - t0) if time_budget else None
        if left is not None and left <= 0:
            break
        wanted = list(paths or (["step", "fit"] + (["e2e"] if data else [])))
        todo = []
        for p in wanted:
            why = skip_reason(v, p, backend)
            if why and verbose:
                print(f"[bench] skip {p} {v.name}: {why}", flush=True)
            if not why:
                todo.append(p)
        if not todo:
            continue
        rows += bench.run(
            paths=todo,
            data=data,
            verbose=verbose,
            time_budget=left,
            build_net=net_builder(v),
            variant=v.name,
            measures=measures_for(v),
            **kwargs,
        )
        kwargs["append"] = True  # later variants add to the same file
    return rows


def _measure_peak(out) -> None:
    if not out:
        return
    try:
        tflops = round(measure_matmul_tflops(), 1)
    except Exception as e:  # diagnostics only
        print(f"[bench] matmul peak not measured: {e}", file=sys.stderr)
        return
    print(f"[bench] bf16 matmul (8192^3 on an accelerator): {tflops} TFLOP/s", flush=True)
    saved = benchfile.read(out) if Path(out).exists() else benchfile.BenchFile()
    saved.meta["matmul_tflops_bf16"] = tflops
    benchfile.write(out, saved)


def run_plan(jobs: list, forced: dict, out, append: bool, time_budget, peak, verbose) -> int:
    """Every job of a plan in this process; returns the number of rows measured."""
    t0 = time.perf_counter()
    n = 0
    for i, job in enumerate(jobs):
        kw = {**job, **forced}
        left = None
        if time_budget:
            left = time_budget - (time.perf_counter() - t0)
            if left <= 5:
                print(f"[bench] plan: time budget spent before job {i + 1}/{len(jobs)}", flush=True)
                break
        print(f"[bench] plan job {i + 1}/{len(jobs)}: {json.dumps(job)}", flush=True)
        try:
            n += len(
                run_variants(
                    out=out, append=append, time_budget=left, keep_going=True, peak=peak, verbose=verbose, **kw
                )
            )
        except Exception as e:  # a job that cannot start (bad arguments, data)
            traceback.print_exc()
            print(f"[bench] plan job {i + 1} failed: {e}", flush=True)
        append = True
    return n


def main(argv=None) -> int:
    p = bench.parser(prog="python -m experiments.perf")
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--variant", nargs="*", default=["project"], help="net variants (see the module docstring)")
    p.add_argument("--plan", default=None, help="JSON list of jobs run in this process, in order, into --out")
    p.add_argument("--measure-peak", action="store_true", help="time a bf16 matmul first (JAX)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    kw = bench.run_args(a)
    out = kw["out"] if kw["out"] != "" else str(benchfile.default_path())
    if a.measure_peak:
        _measure_peak(out)
        kw["append"] = True
    try:
        if a.plan:
            jobs = json.loads(Path(a.plan).read_text())
            forced = {
                k: v
                for k, v in kw.items()
                if k in ("full", "batches", "steps", "warmup", "repeats", "precisions") and v is not None
            }
            n = run_plan(jobs, forced, out, kw["append"], a.time_budget, a.peak_tflops, not a.quiet)
        else:
            n = len(run_variants(a.variant, **kw))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out and Path(out).exists():
        saved = benchfile.read(out)
        print()
        print(bench.format_table(saved.rows))
        note = anchors_note(saved.rows)
        if note:
            print("\nH200 anchors and targets:\n" + note)
        for err in saved.errors:
            print(f"error: {err}")
    return 0 if n else 1
