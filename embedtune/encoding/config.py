"""The encoding options every stage shares (backend, precision, batch size, token limit, cache), declared once.

:class:`EncodeSettings` is the one declaration of these options for index build, search, evaluation
and mining: each field carries the help, choices and range that the CLI options and config keys are
made from, so an option has one name and one range everywhere, and a bad value is refused when the
settings are made rather than midway through a corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedtune.encoding.precision import PRECISIONS
from embedtune.settings import setting, validate

BACKENDS: tuple[str, ...] = ("torch", "openvino")
# What encodes queries that come one or a few at a time (search, the service): auto = openvino when installed.
QUERY_BACKENDS: tuple[str, ...] = ("auto", *BACKENDS)


@dataclass
class EncodeSettings:
    """How a stage encodes texts: one declaration shared by index build, search, evaluation and mining."""

    precision: str = setting(
        "auto",
        help="Encoding precision: auto = bf16 where the CPU has AMX or the GPU has bf16, fp16 on other GPUs, "
        "else fp32; int8 = dynamically quantised Linear layers (CPU; never chosen by auto: slower than bf16 on AMX).",
        choices=PRECISIONS,
    )
    backend: str = setting(
        "torch",
        help="What runs the model: torch, or openvino (CPU; the optional extra embedtune[openvino]): the "
        "transformer converted once and cached beside the encoding cache, checked against PyTorch at conversion.",
        choices=BACKENDS,
    )
    batch_size: int = setting(
        32, help="Texts per encoding batch (texts are sorted by length, so batches pad little).", min=1
    )
    max_seq_length: int | None = setting(
        None, help="Tokens kept per text when encoding (default: the model's own limit).", min=8
    )
    cache: bool = setting(
        True,
        help="Read and write the encoding cache ($EMBEDTUNE_CACHE, default ~/.cache/embedtune/encodings), which "
        "spares re-encoding texts this model has encoded the same way before.",
    )

    def __post_init__(self) -> None:
        validate(self)
