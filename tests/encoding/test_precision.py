"""The precision policy: ``auto`` per device, impossible precisions replaced, training's own set."""

from __future__ import annotations

import pytest

from embedtune.encoding import Encoder, resolve_precision, resolve_training_precision
from embedtune.encoding import precision as precision_policy
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.training import TrainConfig


def test_impossible_precisions_fall_back_with_a_warning(model, monkeypatch):
    monkeypatch.setattr(precision_policy, "cpu_has_bf16", lambda: False)
    with pytest.warns(EmbedtuneWarning, match="fp16 runs on CUDA GPUs only; encoding in fp32 on cpu"):
        assert Encoder(model, "fp16").precision == "fp32"
    monkeypatch.setattr(precision_policy, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    with pytest.warns(EmbedtuneWarning, match="fp16 runs on CUDA GPUs only; encoding in bf16"):
        assert resolve_precision("fp16", "cpu") == "bf16"
    with pytest.raises(EmbedtuneError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize(
    ("amx", "bf16", "encoding", "training"),
    [(True, True, "bf16", "bf16"), (False, True, "bf16", "bf16"), (False, False, "fp32", "fp32")],
)
def test_auto_is_bf16_wherever_the_cpu_has_bf16_arithmetic(monkeypatch, amx, bf16, encoding, training):
    """AVX512-BF16 without AMX (AMD Zen 4) included: for training this is the candidate a run then measures
    (tests/training/test_autocast.py)."""
    monkeypatch.setattr(precision_policy, "cpu_has_amx_bf16", lambda: amx)
    monkeypatch.setattr(precision_policy, "cpu_has_bf16", lambda: bf16)
    assert resolve_precision("auto", "cpu") == encoding
    assert resolve_training_precision("auto", "cpu") == training


def test_bf16_arithmetic_is_read_from_the_cpu_flags(monkeypatch):
    flags = {"amx_bf16 avx512f": True, "avx512_bf16 avx512f": True, "avx512f avx2": False}
    for line, expected in flags.items():
        precision_policy.cpu_flags.cache_clear()
        monkeypatch.setattr(precision_policy.Path, "read_text", lambda self, line=line: f"flags : {line}\n")
        assert precision_policy.cpu_has_bf16() is expected
    precision_policy.cpu_flags.cache_clear()


def test_training_refuses_encoding_only_precisions():
    assert resolve_training_precision("fp32", "cpu") == "fp32"
    for precision in ("int8", "fp16"):
        with pytest.raises(EmbedtuneError, match=f"precision '{precision}' is for encoding only"):
            resolve_training_precision(precision, "cpu")
        with pytest.raises(EmbedtuneError, match="for encoding only"):  # before any mining or loading
            TrainConfig(output="x", precision=precision)
