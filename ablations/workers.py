"""Several runners on one machine: `python -m ablations reproduce ... --workers N`.

Starts N copies of the same command, worker I with ``--worker I/N`` and, where
GPUs are visible, ``CUDA_VISIBLE_DEVICES`` set to the I-th of them, prefixes
their output lines with ``[worker I/N]``, and waits for all of them. The workers
share the runs root; run-directory locks make each run train once
(docs/distributed.md).

One worker per GPU at most: TensorFlow and JAX each take most of a GPU's memory,
so a second process on the same GPU runs out of it. Where no GPU is visible, the
N workers share the CPU cores (useful where one run does not keep every core
busy, as with small presets; they do not finish sooner on a busy machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading


def visible_gpus() -> list:
    """The GPU ids a worker may be given: $CUDA_VISIBLE_DEVICES's list if it is set
    (a scheduler's choice, e.g. SLURM's), else every GPU `nvidia-smi -L` lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [x.strip() for x in env.split(",") if x.strip()]
        return [] if ids[:1] == ["-1"] else ids
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, _ in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def without_workers_option(argv: list) -> list:
    """`argv` less its ``--workers N`` (or ``--workers=N``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out


def _pump(stream, out, prefix: str) -> None:
    for line in stream:
        out.write(prefix + line)
        out.flush()


def launch(argv: list, n: int, gpus: list | None = None) -> int:
    """Run ``python -m ablations <argv> --worker I/N`` for I < n; the worst exit status."""
    gpus = visible_gpus() if gpus is None else gpus
    if gpus and n > len(gpus):
        raise ValueError(
            f"WORKERS={n} (--workers) but {len(gpus)} GPU(s) are visible "
            f"({', '.join(gpus)}): one worker per GPU, since each takes most of a GPU's "
            f"memory. Use --workers {len(gpus)} (make: WORKERS={len(gpus)}), or start more "
            "workers on other machines that share the runs folder (docs/distributed.md)."
        )
    where = (
        f"GPUs {', '.join(gpus[:n])}"
        if gpus
        else f"no GPU visible: they share this machine's {os.cpu_count()} CPU cores"
    )
    print(f"[ablations] starting {n} workers ({where})", flush=True)
    argv = without_workers_option(argv)
    procs, pumps = [], []
    try:
        for i in range(n):
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[i]
            p = subprocess.Popen(
                [sys.executable, "-m", "ablations", *argv, "--worker", f"{i}/{n}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
            procs.append(p)
            for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
                t = threading.Thread(target=_pump, args=(stream, out, f"[worker {i}/{n}] "), daemon=True)
                t.start()
                pumps.append(t)
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:  # the launcher itself was stopped
                p.terminate()
    for t in pumps:
        t.join()
    print(
        f"[ablations] {n} workers done; exit status " + ", ".join(f"{i}/{n}: {c}" for i, c in enumerate(codes)),
        flush=True,
    )
    return max(codes)
