"""How much faster can bf16 or int8 encode at all? The matrix products of the default model against fp32.

Encoding speed in bf16 is bounded by how much faster this machine multiplies bf16 matrices (AMX)
than fp32 ones (AVX-512): the Linear layers are ~96% of the model's arithmetic at 82 tokens. This times one
forward pass worth of them (the six Linear shapes of an all-MiniLM-L6-v2 layer, at batch 32 x 82
tokens, the mean length of the Debian sample in ``encoding_speed.py``), PyTorch's fp32 ``linear``
against bf16 ``linear``, alternating over repeats, in one process. Attention, GELU, LayerNorm and
the rest are left out: they gain less from bf16 (attention's head width of 32 is too narrow to feed
AMX well), so the end-to-end ratio of ``encoding_speed.py`` sits below this one.

The ratio also moves with the machine: on this project's VM, bf16 products of these shapes ran at
0.85-1.06 TFLOP/s in one sitting and 1.4-2.1 in another minutes before, fp32 at 0.23-0.29 in both.
The int8 rows bound int8 encoding the same way: ``int8-dynamic`` is what ``--precision int8`` runs
(PyTorch's dynamically quantised Linear: int8 weights, activations quantised per call, VNNI or AMX
int8 kernels), and ``int8-gemm`` the bare int8 x int8 -> int32 product (``torch._int_mm``) with
activations already in int8 and no requantisation, as a static-int8 runtime would run it at best.

Run it next to ``encoding_speed.py``::

    python benchmarks/gemm_ceiling.py     # ~1 min; results/gemm_ceiling.{json,md}
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine

TOKENS, HIDDEN, FFN, REPEATS, CALLS = 32 * 82, 384, 1536, 7, 10
# (in, out) of each Linear of one BERT layer: query, key, value, attention output, FFN up, FFN down
SHAPES = [(HIDDEN, HIDDEN)] * 4 + [(HIDDEN, FFN), (FFN, HIDDEN)]


def _layers(variant: str) -> list:
    """The six Linear products of one layer in ``variant``, each a function of its fp32 input."""
    import torch

    from embedtune.encoding.kernels import PackedLinear

    dtype = torch.bfloat16 if variant.startswith("bf16") else torch.float32
    layers = [torch.nn.Linear(n_in, n_out, dtype=dtype) for n_in, n_out in SHAPES]
    if variant == "bf16-packed":  # what embedtune's bf16 encoder runs: oneDNN's pre-packed weights
        return [PackedLinear(layer) for layer in layers]
    if variant == "int8-dynamic":  # what --precision int8 runs
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        with warnings.catch_warnings():  # torch.ao's deprecation notices
            warnings.simplefilter("ignore")
            config = {torch.nn.Linear: per_channel_dynamic_qconfig}
            return [quantize_dynamic(torch.nn.Sequential(layer), config, dtype=torch.qint8) for layer in layers]
    if variant == "int8-gemm":  # int8 x int8 -> int32, nothing else
        weights = [torch.randint(-127, 128, (n_in, n_out), dtype=torch.int8) for n_in, n_out in SHAPES]
        return [lambda x, w=w: torch._int_mm(x, w) for w in weights]
    return layers


def layer_seconds(variant: str) -> float:
    """Seconds for the six Linear products of one layer (best of ``CALLS`` after a warm-up)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "int8": torch.int8}.get(variant[:4], torch.float32)
    if variant == "int8-dynamic":
        dtype = torch.float32  # quantised inside each call
    x = {n_in: torch.randn(TOKENS, n_in).mul(40).to(dtype) for n_in in (HIDDEN, FFN)}
    layers = _layers(variant)
    best = float("inf")
    with torch.inference_mode():
        for call in range(CALLS + 2):
            started = time.perf_counter()
            for layer, (n_in, _) in zip(layers, SHAPES, strict=True):
                layer(x[n_in])
            if call >= 2:
                best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    import torch

    flops = 2 * TOKENS * sum(n_in * n_out for n_in, n_out in SHAPES)
    variants = ("fp32", "bf16", "bf16-packed", "int8-dynamic", "int8-gemm")
    runs: dict[str, list[float]] = {v: [] for v in variants}
    for repeat in range(REPEATS):
        for name in variants if repeat % 2 == 0 else reversed(variants):
            runs[name].append(layer_seconds(name))
    seconds = {v: statistics.median(s) for v, s in runs.items()}
    summary = {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "tokens": TOKENS,
        "shapes": SHAPES,
        "gflop_per_s": {v: round(flops / s / 1e9, 1) for v, s in seconds.items()},
        "speedup_over_fp32": {v: round(seconds["fp32"] / s, 2) for v, s in seconds.items()},
        "runs_seconds": runs,
        "command": "python benchmarks/gemm_ceiling.py",
    }
    lines = [
        "# bf16 and int8 against fp32 on the Linear layers alone (the ceilings of bf16 and int8 encoding)",
        "",
        f"The six Linear products of one all-MiniLM-L6-v2 layer at {TOKENS} tokens (batch 32 x 82), best of "
        f"{CALLS} calls, median of {REPEATS} alternating repeats; {summary['machine']}, {summary['threads']} threads.",
        "",
        "| variant | GFLOP/s (GOP/s for int8) | x fp32 |",
        "|---|---|---|",
        *(f"| {v} | {summary['gflop_per_s'][v]:,.0f} | {summary['speedup_over_fp32'][v]:.2f}x |" for v in variants),
        "",
        f"Command: `{summary['command']}`",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gemm_ceiling.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "gemm_ceiling.md").write_text(report)


if __name__ == "__main__":
    main()
