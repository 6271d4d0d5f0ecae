"""The model surgery: int8 layers chosen by shape, bf16 Linear layers pre-packed with GELU fused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedtune.encoding import Encoder
from embedtune.encoding.kernels import PackedLinear


def test_int8_quantises_the_linear_layers_but_not_the_down_projections(model):
    from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear

    modules = dict(Encoder(model, "int8").model.named_modules())
    layer = next(name for name in modules if name.endswith("layer.0"))
    assert isinstance(modules[f"{layer}.attention.self.query"], QuantizedLinear)
    assert isinstance(modules[f"{layer}.intermediate.dense"], QuantizedLinear)
    assert type(modules[f"{layer}.output.dense"]) is torch.nn.Linear  # the feed-forward output (64 -> 32)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU's oneDNN has no native bf16")
def test_bf16_runs_on_packed_linears_with_gelu_fused_and_agrees_with_plain_bf16(model, texts):
    packed, plain = Encoder(model, "bf16"), Encoder(model, "bf16", pack=False)
    layer = packed.model[0].auto_model.encoder.layer[0]
    assert isinstance(layer.attention.self.query, PackedLinear)
    assert layer.intermediate.dense.attr == "gelu"
    assert isinstance(layer.intermediate.intermediate_act_fn, torch.nn.Identity)
    assert layer.output.dense.attr == "none"  # the down-projection has no activation after it
    assert isinstance(plain.model[0].auto_model.encoder.layer[0].attention.self.query, torch.nn.Linear)
    packed_vectors, plain_vectors = (e.encode(texts, batch_size=4, show_progress=False) for e in (packed, plain))
    assert np.min(np.sum(packed_vectors * plain_vectors, axis=1)) > 0.9999
    single = packed.encode(texts[:1], show_progress=False)  # batch 1: no length pass, same vector
    assert np.sum(single[0] * packed_vectors[0]) > 0.9999
