"""Training's precision: bf16 autocast where a short measurement shows it faster and in agreement with fp32.

A CPU flag table is a guess: bf16 autocast pays on CPUs with AMX tiles, and on many with only
AVX512-BF16 dot products, but by how much depends on the model, the sequence length and oneDNN's
kernels, and on a CPU with neither, autocast runs bf16 in emulation, slower than fp32. So ``auto``
asks the flags only whether bf16 *could* pay
(:func:`~embedtune.encoding.precision.bf16_arithmetic`); where it could, one training
step on the run's own first rows is timed in fp32 and under bf16 autocast, and bf16 is chosen only
when it is at least :data:`MIN_SPEEDUP` times faster and its loss agrees with fp32's
(:data:`LOSS_TOLERANCE`). The choice and its reason (both timings) are said like every other choice
of the run: in the log, the run record and the model card. CUDA keeps the device rule: bf16 where
the GPU has it.

The step is forward and backward through the run's loss in eval mode (no dropout, so the two
precisions see the same computation); gradients are discarded and the weights are not touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from embedtune.encoding import resolve_training_precision
from embedtune.encoding.precision import bf16_arithmetic, cpu_flags
from embedtune.training.choices import Choice

if TYPE_CHECKING:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from torch import nn

PROBE_ROWS = 8  # rows of the timed step: enough to reach the kernels' steady speed, cheap next to a run
MIN_SPEEDUP = 1.1  # bf16 must be this much faster to be worth its rounding
LOSS_TOLERANCE = 0.05  # the bf16 loss may differ from fp32's by this share (of at least 1)


def choose_precision(
    asked: str, model: SentenceTransformer, loss: nn.Module, rows: Dataset, flags: frozenset[str] | None = None
) -> Choice:
    """Training's precision for ``asked`` (``auto``, ``fp32`` or ``bf16``), with its reason.

    ``rows`` are the training rows the loss takes (text columns, maybe a label); ``flags`` default to
    this machine's CPU flags.
    """
    precision = resolve_training_precision(asked, str(model.device))  # validates; the device rule for CUDA
    if asked != "auto":
        return Choice(precision, "given", "precision")
    if model.device.type != "cpu":
        return Choice(precision, "rule", f"{model.device.type}: bf16 where the device has it")
    flags = cpu_flags() if flags is None else flags
    if not bf16_arithmetic(flags):
        return Choice("fp32", "rule", "the CPU has no bf16 arithmetic (AMX or AVX512-BF16): autocast would emulate it")
    step = _step(model, loss, rows)
    fp32_s, fp32_loss = _timed(step, bf16=False)
    bf16_s, bf16_loss = _timed(step, bf16=True)
    measured = f"one step of {len(rows)} rows: fp32 {fp32_s:.2f} s, bf16 {bf16_s:.2f} s"
    if abs(bf16_loss - fp32_loss) > LOSS_TOLERANCE * max(1.0, abs(fp32_loss)):
        return Choice("fp32", "measured", f"{measured}, but bf16's loss {bf16_loss:.4f} is off fp32's {fp32_loss:.4f}")
    if fp32_s < MIN_SPEEDUP * bf16_s:
        return Choice("fp32", "measured", f"{measured}: bf16 not {MIN_SPEEDUP:g}x faster")
    return Choice("bf16", "measured", f"{measured}, losses {fp32_loss:.4f} and {bf16_loss:.4f}: bf16 autocast")


def probe_rows(dataset: Dataset) -> Dataset:
    """The first :data:`PROBE_ROWS` rows of a training dataset (of the first one of several)."""
    first = dataset[next(iter(dataset))] if hasattr(dataset, "keys") else dataset
    return first.select(range(min(PROBE_ROWS, len(first))))


def step_loss(model: SentenceTransformer, loss: nn.Module, rows: Dataset, *, bf16: bool) -> float:
    """The loss of one forward and backward pass over ``rows``, under bf16 autocast or in fp32 (eval mode)."""
    return _timed(_step(model, loss, rows), bf16=bf16)[1]


def _step(model: SentenceTransformer, loss: nn.Module, rows: Dataset) -> Callable[[], float]:
    import torch

    columns = [c for c in rows.column_names if c != "label"]
    features = [_on(model.preprocess(list(rows[c])), model.device) for c in columns]
    labels = torch.tensor(rows["label"], device=model.device) if "label" in rows.column_names else None

    def step() -> float:
        training = model.training
        model.eval()
        try:
            value = loss(features, labels)
            value.backward()
            return float(value.detach())
        finally:
            model.zero_grad(set_to_none=True)
            model.train(training)

    return step


def _on(features: dict, device) -> dict:
    """``features`` with its tensors moved to ``device`` (the modality name and such stay as they are)."""
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def _timed(step: Callable[[], float], *, bf16: bool) -> tuple[float, float]:
    """The seconds of the faster of two runs of ``step`` after a warm-up one, and its loss."""
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        step()  # kernels are chosen and laid out on the first call
        best, value = float("inf"), 0.0
        for _ in range(2):
            started = time.perf_counter()
            value = step()
            best = min(best, time.perf_counter() - started)
    return best, value
