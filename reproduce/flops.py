"""The two sides of model FLOP utilization (MFU): the model FLOPs of a training
step, counted from a model's layer shapes, and the peak FLOP/s of the accelerator.

The paper's 227-px two-tower net does 724.4 M multiply-adds forward per image, so
4.35 GFLOP per training image (x2 FLOPs per multiply-add, x3 for forward and
backward).
"""

from __future__ import annotations

import re

import keras
import numpy as np

#: Training FLOPs per image of the paper's 227-px two-tower net (6 x 724.4 M MACs).
PAPER_TRAIN_FLOPS = 4.35e9

#: Dense peak TFLOP/s by device name (regex, first match wins): bf16 (fp16 where the
#: chip has no bf16 tensor cores: V100, T4), tf32 tensor cores (None: none), fp32.
#: Vendor datasheets, dense (no sparsity); the datasheet figure is the MFU
#: denominator.
PEAKS = (
    (r"H200 NVL|H100 NVL", {"bf16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    (r"H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    (r"GH200|H200|H100|H800", {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0}),
    (r"A100|A800", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"V100", {"bf16": 125.0, "tf32": None, "fp32": 15.7}),
    (r"RTX 4090", {"bf16": 165.0, "tf32": 82.6, "fp32": 82.6}),
    (r"L40S", {"bf16": 362.0, "tf32": 183.0, "fp32": 91.6}),
    (r"L40\b", {"bf16": 181.0, "tf32": 90.5, "fp32": 90.5}),
    (r"\bL4\b", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"\bT4\b", {"bf16": 65.0, "tf32": None, "fp32": 8.1}),
)


def _layers(model):
    """Every layer of a functional model, those of nested models included."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def forward_macs(model) -> int:
    """Multiply-adds of one example's forward pass in the layers with a kernel
    (convolutions, dense and locally connected layers; nothing else is counted),
    from the layer shapes of a functional model.

    A layer with kernel ``K`` and an output of ``P`` positions (the product of the
    output's spatial dimensions) does ``P * K.size`` MACs: that is
    ``out_h*out_w*out_c*(kh*kw*in_c/groups)`` for a (grouped) convolution,
    ``in*out`` for a dense layer. A locally connected layer's kernel already holds
    one matrix per position. A layer may declare ``mac_fraction``, the share of
    its kernel that does useful work (a kernel masked to blocks): that share is
    counted, not the zeros.
    """
    total = 0.0
    for layer in _layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        size = int(np.prod(kernel.shape))
        if type(layer).__name__ == "LocallyConnected2D":
            total += size
            continue
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):  # never called, or called more than once
            raise ValueError(
                f"cannot count the MACs of layer {layer.name!r}: it has no single output "
                "shape (layers of a functional model, each called once, are counted)"
            ) from None
        positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        total += positions * size * float(getattr(layer, "mac_fraction", 1.0))
    return int(round(total))


def training_flops(model) -> float:
    """Training FLOPs per example: 6 x forward MACs (2 FLOPs per multiply-add; the
    backward pass does twice the forward's work: gradients w.r.t. inputs and
    weights). The paper's 227-px two-tower net gives 4.35e9."""
    return 6.0 * forward_macs(model)


def peak_tflops(device: str, precision: str) -> tuple[float | None, str | None]:
    """(peak TFLOP/s, which peak) for a device description and a Keras precision.

    float32 uses the TF32 tensor-core peak where the chip has one (XLA, on JAX and
    TensorFlow, runs float32 convolutions and matmuls in TF32 there by default),
    else plain fp32. (None, None) for a device not in :data:`PEAKS` (CPUs among
    them).
    """
    for pattern, peaks in PEAKS:
        if re.search(pattern, device or "", re.IGNORECASE):
            if precision == "mixed_bfloat16":
                return peaks["bf16"], "bf16"
            if peaks.get("tf32"):
                return peaks["tf32"], "tf32"
            return peaks["fp32"], "fp32"
    return None, None
