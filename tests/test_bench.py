"""reproduce.bench: FLOP counting, the results file, and the JAX path without TensorFlow.

These check what the bench writes, not how fast anything is (CI is a shared CPU).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from reproduce import bench, benchfile, flops
from reproduce.model import alexnet

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
TINY = dict(full=False, precisions=["float32"], batches=[4], steps=2, warmup=1, repeats=1, verbose=False)


def _check_rows(rows, paths):
    small_flops = flops.training_flops(alexnet(67, 1000, width=0.125))
    assert [r["path"] for r in rows] == list(paths)
    for r in rows:
        for key in benchfile.ROW_KEYS:
            assert key in r, key
        assert r["images_per_s"] > 0 and r["step_ms"] > 0
        assert r["batch"] == 4 and r["precision"] == "float32" and r["steps"] >= 2
        assert r["crop_size"] == 67 and r["width"] == 0.125
        assert r["loss_finite"] is True
        assert r["flops_per_image"] == pytest.approx(small_flops, rel=1e-9)
        assert r["date"].count("-") == 2


def test_training_flops_of_the_papers_net():
    paper = alexnet(227, 1000)
    assert flops.training_flops(paper) == pytest.approx(flops.PAPER_TRAIN_FLOPS, rel=0.01)
    assert flops.forward_macs(paper) == pytest.approx(724.4e6, rel=1e-3)  # forward multiply-adds
    # conv1 of one tower by hand: 55x55 positions x 11x11x3 x 48 (§3.5, Fig. 2).
    conv1 = keras.Model(paper.input, paper.get_layer("conv1_a").output)
    assert flops.forward_macs(conv1) == 55 * 55 * 11 * 11 * 3 * 48


def test_peaks_and_mfu_inputs():
    assert flops.peak_tflops("1 x NVIDIA H200", "mixed_bfloat16") == (989.0, "bf16")
    assert flops.peak_tflops("NVIDIA H100 80GB HBM3", "float32") == (495.0, "tf32")
    assert flops.peak_tflops("Tesla V100-SXM2-16GB", "float32") == (15.7, "fp32")
    assert flops.peak_tflops("NVIDIA L40S", "mixed_bfloat16")[0] == 362.0
    assert flops.peak_tflops("NVIDIA L4", "mixed_bfloat16")[0] == 121.0
    assert flops.peak_tflops("CPU (x86_64, 2 cores)", "float32") == (None, None)


@pytest.mark.skipif(BACKEND == "jax", reason="the JAX path runs in the subprocess test below")
def test_bench_writes_its_results_file(tmp_path):
    """In-process `run` on the active backend, both synthetic paths."""
    out = tmp_path / "bench.json"
    rows = bench.run(paths=["step", "fit"], out=str(out), peak=1.0, **TINY)
    _check_rows(rows, ["step", "fit"])
    assert all(r["mfu"] > 0 for r in rows)  # against the given 1 TFLOP/s peak
    saved = benchfile.read(out)
    assert saved.meta["backend"] == BACKEND and saved.rows == json.loads(json.dumps(rows))
    assert saved.errors == []
    assert "| step |" in bench.format_table(rows)

    # --append adds to what is there; with keep_going a failing row is recorded, not raised.
    def out_of_memory(job):
        raise RuntimeError(f"out of memory at batch {job.batch}")

    more = bench.run(paths=["fit"], out=str(out), append=True, keep_going=True, measures={"fit": out_of_memory}, **TINY)
    saved = benchfile.read(out)
    assert more == [] and len(saved.rows) == 2 and len(saved.errors) == 1
    assert saved.errors[0]["error"] == "RuntimeError: out of memory at batch 4"
    assert set(benchfile.ERROR_KEYS) <= set(saved.errors[0])


def test_the_feed_path_times_keras_adapter_and_the_bare_reads(tmp_path):
    """The feed row (no model): Keras' PyDataset adapter as fit uses it, the bare
    reads beside it, and on TensorFlow the trainer's tf.data feed."""
    rows = bench.run(paths=["feed"], out=str(tmp_path / "bench.json"), peak=1.0, **TINY)
    assert [r["path"] for r in rows] == ["feed"]
    (row,) = rows
    assert row["feed"] == "keras adapter" and row["images_per_s"] > 0 and row["reads_images_per_s"] > 0
    assert (row.get("tf_data_images_per_s", 0) > 0) == (BACKEND == "tensorflow")


def test_results_file_round_trip_and_the_reports_table(tmp_path):
    """The report reads bench.json through reproduce.benchfile: after a failed row
    it shows the measurements, not the error list."""
    row = {
        "backend": "jax",
        "device": "1 x NVIDIA H200",
        "precision": "mixed_bfloat16",
        "batch": 512,
        "path": "step",
        "images_per_s": 24321.5,
        "mfu": 0.107,
        "steps": 30,
        "date": "2026-11-29",
        "variant": "project",
        "step_ms": 21.05,
        "steps_per_execution": 1,
    }
    error = {
        "path": "fit",
        "variant": "project",
        "precision": "float32",
        "batch": 512,
        "label": "J8",
        "error": "RuntimeError: out of memory",
    }
    p = tmp_path / benchfile.FILE_NAME
    benchfile.write(p, benchfile.BenchFile({"tool": "reproduce.bench"}, [row], [error]))
    back = benchfile.read(p)
    assert back.rows == [row] and back.errors == [error] and back.meta == {"tool": "reproduce.bench"}
    assert back.table() == [{k: row.get(k) for k in benchfile.TABLE_KEYS}]
    with pytest.raises(ValueError, match="lacks"):
        benchfile.write(p, benchfile.BenchFile({}, [{"path": "step"}]))

    from reports import build_report

    md = build_report(tmp_path, tmp_path / "report").markdown.read_text()
    section = md[md.index("Throughput benchmark") :]
    assert "24321.5" in section and "step" in section
    assert "out of memory" not in section


_NO_TF = """
import sys
for name in ("tensorflow", "tensorflow_datasets", "tensorboard"):
    sys.modules[name] = None  # as if not installed: import fails, find_spec is None
from reproduce.__main__ import main
code = main(["bench", *sys.argv[1:]])
import reproduce.model, reproduce.layers, reproduce.augment, reproduce.data, reproduce.train
assert sys.modules.get("tensorflow") is None
sys.exit(code)
"""


@pytest.mark.slow
def test_jax_bench_runs_without_tensorflow(tmp_path):
    """The GPU machine has JAX and no TensorFlow. `python -m reproduce bench` (step
    and fit paths: the trainer's model, compile and callbacks, reproduce.data's
    ArrayBatches) must run with `import tensorflow` failing, and write its file."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    args = [
        "--small",
        "--paths",
        "step,fit",
        "--precision",
        "float32",
        "--batch",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    p = subprocess.run(
        [sys.executable, "-c", _NO_TF, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    saved = benchfile.read(out)
    _check_rows(saved.rows, ["step", "fit"])
    assert saved.meta["backend"] == "jax" and saved.rows[0]["mfu"] is None  # a CPU: no known peak
    assert "| step |" in p.stdout and "| fit |" in p.stdout


def test_a_cpu_is_named_by_its_model_on_either_backend():
    """JAX calls every CPU "cpu": runs on two different CPUs must not look like one
    device (the estimates and the report's wall times compare per device)."""
    from reproduce.devices import accelerator, device_description

    if accelerator():
        pytest.skip("an accelerator is visible")
    desc = device_description()
    assert desc.startswith("CPU (") and desc.endswith(f", {os.cpu_count()} cores)"), desc


def test_two_cpus_of_one_model_name_are_told_apart_by_family_and_model():
    """Cloud VMs name different CPU generations alike ('AMD EPYC'); a device that
    the estimates and the report's wall times compare by must tell them apart."""
    from reproduce.devices import cpu_name

    def cpuinfo(model):  # two processors, as Linux writes them
        block = (
            f"processor\t: {{}}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
            f"model\t\t: {model}\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2\n"
        )
        return block.format(0) + "\n" + block.format(1).replace(f": {model}\n", ": 99\n")

    assert cpu_name(cpuinfo(17)) == "AMD EPYC, family 25 model 17"
    assert cpu_name(cpuinfo(1)) == "AMD EPYC, family 25 model 1"
    # No family/model lines (e.g. some ARM kernels): the model name alone; none: ''.
    assert cpu_name("processor\t: 0\nmodel name\t: Neoverse-V2\n") == "Neoverse-V2"
    assert cpu_name("processor\t: 0\nCPU part\t: 0xd4f\n") == ""
