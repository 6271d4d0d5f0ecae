"""The model surgery behind the fast precisions: half-precision copies, pre-packed bf16 Linear layers, int8.

This is the only module that touches private torch ops (``torch.ops.mkldnn``) or rewrites a model's
layers, so a torch upgrade that changes them breaks here and nowhere else. What it designs out:

* a caller's model changed under it: every precision but fp32 runs on a converted *copy*, so a
  model being trained keeps its fp32 weights;
* a private op called where it does not exist: :func:`can_pack` checks that this torch has the
  oneDNN op and that this CPU runs bf16 natively before anything is packed;
* a packed weight reaching a model that is saved or trained: :class:`PackedLinear` is not an
  ``nn.Module``, so its opaque oneDNN weight lives only in an encoding copy.
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer


def _quantized(model: SentenceTransformer) -> SentenceTransformer:
    """A copy whose Linear layers are int8 (per-channel weights, activations quantised per batch).

    Down-projections (wider in than out: the feed-forward output) stay fp32: they read GELU outputs,
    whose outliers a per-tensor activation scale clips. Keeping them fp32 costs a little of int8's
    speed and brings its worst vectors closer to fp32's (int8's speed and cosine to fp32:
    ``benchmarks/results/encoding_speed.md``).
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    quantized = copy.deepcopy(model)
    layers = {
        name: per_channel_dynamic_qconfig
        for name, module in quantized.named_modules()
        if isinstance(module, torch.nn.Linear) and module.in_features <= module.out_features
    }
    with warnings.catch_warnings():  # torch.ao's deprecation notices: nothing the user can act on
        warnings.simplefilter("ignore")
        return quantize_dynamic(quantized, layers, dtype=torch.qint8)


class PackedLinear:
    """A bf16 ``nn.Linear`` whose weight oneDNN has re-laid out once for its AMX kernels, optionally with
    the GELU that follows it fused in.

    A plain bf16 Linear has oneDNN reorder its weight for the AMX kernels on every call, which weighs
    most at batch 1, where that reorder is a large share of the call; packing once cuts batch-1
    latency and helps documents a little (the ``bf16`` and ``bf16-unpacked`` rows of
    ``benchmarks/results/encoding_speed.md``). This is the op torch.compile's freezing pass emits,
    without compiling. It is not an ``nn.Module`` parameter holder on purpose: the packed weight is an
    opaque oneDNN tensor, so it lives only in an encoding copy of the model.
    """

    def __init__(self, linear: torch.nn.Linear, gelu: bool = False):
        import torch

        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.out_features = linear.out_features
        # oneDNN's pointwise attribute and algorithm: exact (erf) GELU, or none
        self.attr, self.algorithm = ("gelu", "none") if gelu else ("none", "")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        flat = x.reshape(-1, x.shape[-1])
        y = torch.ops.mkldnn._linear_pointwise(flat, self.weight, self.bias, self.attr, [], self.algorithm)
        return y.reshape(*x.shape[:-1], self.out_features)


def _pack_linears(model: torch.nn.Module) -> None:
    """Swap every Linear of a CPU bf16 ``model`` for a :class:`PackedLinear`, in place.

    A feed-forward block laid out as Hugging Face encoders do (``dense`` then ``intermediate_act_fn``,
    BERT/RoBERTa/MPNet/ELECTRA) with exact GELU gets the GELU fused into its Linear; any other
    activation stays as it is.
    """
    import torch
    from transformers.activations import GELUActivation

    for module in list(model.modules()):
        activation = getattr(module, "intermediate_act_fn", None)
        fusable = type(activation) is GELUActivation and activation.act is torch.nn.functional.gelu
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                fuse = fusable and name == "dense"
                delattr(module, name)  # a plain attribute from here on, not a submodule
                setattr(module, name, PackedLinear(child, gelu=fuse))
                if fuse:
                    module.intermediate_act_fn = torch.nn.Identity()


def can_pack(model: SentenceTransformer, precision: str) -> bool:
    """Packing pays for bf16 on a CPU whose oneDNN runs bf16 natively (it is a private torch op: guard it)."""
    import torch

    return (
        precision == "bf16"
        and model.device.type == "cpu"
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def prepared_model(model: SentenceTransformer, precision: str, pack: bool) -> SentenceTransformer:
    """The model to run: the caller's own in fp32, else a converted copy (a model being trained stays fp32)."""
    import torch

    if precision == "int8":
        return _quantized(model)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return model
    converted = copy.deepcopy(model).to(dtype)
    if pack and can_pack(model, precision):
        _pack_linears(converted)
    return converted
