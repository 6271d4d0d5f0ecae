"""Turning texts into normalised float32 vectors, in the fastest precision that is safe here.

Index build, evaluation and search all encode through :class:`Encoder`, so a speed-up here reaches
every stage. ``auto`` precision picks bf16 where the hardware has native bf16 matrix units (AMX on
Intel CPUs, CUDA GPUs with bf16): on this project's 2-core Sapphire Rapids machine that encodes the
default corpus about 3x faster than fp32 with cosine >= 0.998 to the fp32 vectors.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from embedtune.errors import EmbedtuneError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


@functools.cache
def cpu_has_amx_bf16() -> bool:
    """True where the CPU advertises AMX bf16 tiles (Linux ``/proc/cpuinfo`` flags)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def resolve_precision(precision: str, device: str) -> Literal["fp32", "bf16"]:
    """Map ``auto`` to bf16 where the device runs it natively, else fp32; validate the name."""
    if precision not in PRECISIONS:
        raise EmbedtuneError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_amx_bf16() else "fp32"


class Encoder:
    """A model made ready to encode in one precision, for any number of ``encode`` calls.

    bf16 runs on a bf16 copy made once here, so the caller's fp32 weights are never rounded (a
    model being trained must stay in fp32) and repeated calls (one search per request) pay no copy.
    """

    def __init__(self, model: SentenceTransformer, precision: str = "auto"):
        import torch

        self.precision = resolve_precision(precision, str(model.device))
        self.model = copy.deepcopy(model).to(torch.bfloat16) if self.precision == "bf16" else model

    def encode(
        self,
        texts: list[str],
        *,
        role: Literal["query", "document"] | None = None,
        batch_size: int = 32,
        show_progress: bool = True,
    ) -> np.ndarray:
        """L2-normalised float32 vectors of shape ``(len(texts), dim)``.

        ``role`` applies the model's saved ``query``/``document`` prompt (E5/BGE-style prefixes set at
        training time), if it has one. sentence-transformers sorts texts by length, so each batch is
        padded only to its own longest.
        """
        vectors = self.model.encode(
            texts,
            prompt_name=role if role in (self.model.prompts or {}) else None,
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
