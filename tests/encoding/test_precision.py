"""The precision policy: ``auto`` per device, impossible precisions replaced, training's own set."""

from __future__ import annotations

import pytest

from embedtune.encoding import Encoder, resolve_precision, resolve_training_precision
from embedtune.encoding import precision as precision_policy
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.training import TrainConfig


def test_impossible_precisions_fall_back_with_a_warning(model, monkeypatch):
    monkeypatch.setattr(precision_policy, "cpu_has_amx_bf16", lambda: False)
    with pytest.warns(EmbedtuneWarning, match="fp16 runs on CUDA GPUs only; encoding in fp32 on cpu"):
        assert Encoder(model, "fp16").precision == "fp32"
    monkeypatch.setattr(precision_policy, "cpu_has_amx_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    with pytest.warns(EmbedtuneWarning, match="fp16 runs on CUDA GPUs only; encoding in bf16"):
        assert resolve_precision("fp16", "cpu") == "bf16"
    with pytest.raises(EmbedtuneError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", "cpu")


def test_training_refuses_encoding_only_precisions():
    assert resolve_training_precision("fp32", "cpu") == "fp32"
    for precision in ("int8", "fp16"):
        with pytest.raises(EmbedtuneError, match=f"precision '{precision}' is for encoding only"):
            resolve_training_precision(precision, "cpu")
        with pytest.raises(EmbedtuneError, match="for encoding only"):  # before any mining or loading
            TrainConfig(output="x", precision=precision)
