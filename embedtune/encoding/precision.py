"""Which precision encoding and training run in: the names, and what ``auto`` means on this machine.

``auto`` picks bf16 where the hardware has native bf16 arithmetic (CPUs with AMX tiles or AVX512-BF16
dot products, CUDA GPUs with bf16), fp16 on older CUDA GPUs, else fp32: on a CPU with only AVX512-BF16
(AMD Zen 4, Cooper Lake) oneDNN's bf16 kernels still beat fp32 clearly (``encoding_speed.md``), so AMX
is not required for encoding. Training's ``auto`` here is the flag rule (bf16 where the CPU has bf16
arithmetic); a training run measures it before it trusts it (:mod:`embedtune.training.autocast`).
A precision the device cannot run (fp16 on a CPU,
int8 on a GPU) falls back to the device's ``auto`` choice with a warning rather than failing, so an
index built in fp16 on a GPU can still be searched on a CPU. Training accepts only the precisions it
can train in, and refuses the encoding-only ones by name before any work starts.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Literal

from embedtune.errors import EmbedtuneError, EmbedtuneWarning

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16", "int8")
TRAIN_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def cpu_has_amx_bf16() -> bool:
    """True where the CPU advertises AMX bf16 tiles."""
    return "amx_bf16" in cpu_flags()


def bf16_arithmetic(flags: frozenset[str]) -> bool:
    """Whether CPU ``flags`` (``/proc/cpuinfo``'s words) include native bf16 arithmetic: AMX tiles or
    AVX512-BF16 dot products. Without either, bf16 runs in emulation, slower than fp32."""
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def cpu_has_bf16() -> bool:
    """True where this machine's CPU has native bf16 arithmetic (:func:`bf16_arithmetic`)."""
    return bf16_arithmetic(cpu_flags())


def _native_half(device: str) -> Literal["fp32", "bf16", "fp16"]:
    """The fastest safe encoding precision of a device: bf16 on CPUs with bf16 arithmetic and on bf16
    GPUs, fp16 on other GPUs."""
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def resolve_precision(precision: str, device: str) -> str:
    """The encoding precision ``precision`` means on ``device``: ``auto`` resolved, impossible ones replaced.

    fp16 runs on CUDA only and int8 (dynamic quantisation) on CPUs only; asked for elsewhere, the
    device's ``auto`` choice is used instead, with a warning (an index built in fp16 on a GPU can
    still be searched on a CPU).
    """
    if precision not in PRECISIONS:
        raise EmbedtuneError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    cuda = device.startswith("cuda")
    if precision == "auto":
        return _native_half(device)
    if (precision == "fp16" and not cuda) or (precision == "int8" and cuda):
        fallback = _native_half(device)
        where = "CUDA GPUs" if precision == "fp16" else "CPUs"
        warnings.warn(
            f"precision {precision} runs on {where} only; encoding in {fallback} on {device} instead",
            EmbedtuneWarning,
            stacklevel=3,
        )
        return fallback
    return precision


def resolve_training_precision(precision: str, device: str) -> Literal["fp32", "bf16"]:
    """Training's precision: fp32, or bf16 autocast over fp32 weights (``auto``: where the device has bf16 units;
    on a CPU, :func:`embedtune.training.autocast.choose_precision` then measures whether it pays)."""
    if precision not in TRAIN_PRECISIONS:
        if precision in PRECISIONS:
            raise EmbedtuneError(
                f"precision '{precision}' is for encoding only; training runs in {', '.join(TRAIN_PRECISIONS)}"
            )
        raise EmbedtuneError(f"unknown precision '{precision}' (choose from {', '.join(TRAIN_PRECISIONS)})")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if not device.startswith("cuda"):
        return "bf16" if cpu_has_bf16() else "fp32"
    return "bf16" if _native_half(device) == "bf16" else "fp32"
