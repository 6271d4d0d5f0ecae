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

# auto = openvino where installed and it pays, else torch (embedtune.encoding.make_encoder says when).
BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino")
# Texts a batch encode needs for auto to convert a model to OpenVINO: a conversion takes seconds and
# saves a tenth of the encoding time or so (benchmarks/results/encoding_speed.md), so it is repaid only
# from several thousand texts on.
OPENVINO_MIN_TEXTS = 5000


@dataclass
class EncodeSettings:
    """How a stage encodes texts: one declaration shared by index build, search, evaluation and mining."""

    precision: str = setting(
        "auto",
        help="Encoding precision: auto = bf16 where the CPU has bf16 arithmetic (AMX or AVX512-BF16) or the GPU "
        "has bf16, fp16 on other GPUs, else fp32; int8 = dynamically quantised Linear layers (CPU; never chosen "
        "by auto: slower than bf16 and further from fp32).",
        choices=PRECISIONS,
    )
    backend: str = setting(
        "auto",
        help="What runs the model: torch, or openvino (CPU; the optional extra embedtune[openvino]): the "
        "transformer converted once and cached beside the encoding cache, checked against PyTorch at conversion. "
        f"auto = openvino where it is installed, on a CPU, for {OPENVINO_MIN_TEXTS:,} texts or more or a model "
        "converted before (a conversion takes seconds), else torch; a conversion that fails falls back to torch "
        "with a warning.",
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
