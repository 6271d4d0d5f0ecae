"""How much faster can bf16 encode at all? The matrix products of the default model, bf16 against fp32.

Encoding speed in bf16 is bounded by how much faster this machine multiplies bf16 matrices (AMX)
than fp32 ones (AVX-512): the Linear layers are ~96% of the model's arithmetic at 82 tokens. This times one
forward pass worth of them (the six Linear shapes of an all-MiniLM-L6-v2 layer, at batch 32 x 82
tokens, the mean length of the Debian sample in ``encoding_speed.py``), PyTorch's fp32 ``linear``
against bf16 ``linear``, alternating over repeats, in one process. Attention, GELU, LayerNorm and
the rest are left out: they gain less from bf16 (attention's head width of 32 is too narrow to feed
AMX well), so the end-to-end ratio of ``encoding_speed.py`` sits below this one.

The ratio also moves with the machine: on this project's VM, bf16 products of these shapes ran at
0.85-1.06 TFLOP/s in one sitting and 1.4-2.1 in another minutes before, fp32 at 0.23-0.29 in both.
Run it next to ``encoding_speed.py``::

    python benchmarks/gemm_ceiling.py     # ~1 min; results/gemm_ceiling.{json,md}
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine

TOKENS, HIDDEN, FFN, REPEATS, CALLS = 32 * 82, 384, 1536, 7, 10
# (in, out) of each Linear of one BERT layer: query, key, value, attention output, FFN up, FFN down
SHAPES = [(HIDDEN, HIDDEN)] * 4 + [(HIDDEN, FFN), (FFN, HIDDEN)]


def layer_seconds(dtype, packed: bool) -> float:
    """Seconds for the six Linear products of one layer (best of ``CALLS`` after a warm-up)."""
    import torch

    from embedtune.encoding.kernels import PackedLinear

    x = {n_in: torch.randn(TOKENS, n_in, dtype=dtype) for n_in in (HIDDEN, FFN)}
    layers = [torch.nn.Linear(n_in, n_out, dtype=dtype) for n_in, n_out in SHAPES]
    if packed:  # what embedtune's bf16 encoder runs: oneDNN's pre-packed weights
        layers = [PackedLinear(layer) for layer in layers]
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
    variants = {"fp32": (torch.float32, False), "bf16": (torch.bfloat16, False), "bf16-packed": (torch.bfloat16, True)}
    runs: dict[str, list[float]] = {v: [] for v in variants}
    for repeat in range(REPEATS):
        for name in variants if repeat % 2 == 0 else reversed(variants):
            runs[name].append(layer_seconds(*variants[name]))
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
        "# bf16 against fp32 on the Linear layers alone (the ceiling of bf16 encoding)",
        "",
        f"The six Linear products of one all-MiniLM-L6-v2 layer at {TOKENS} tokens (batch 32 x 82), best of "
        f"{CALLS} calls, median of {REPEATS} alternating repeats; {summary['machine']}, {summary['threads']} threads.",
        "",
        "| variant | GFLOP/s | x fp32 |",
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
