"""Layer-wise learning-rate decay: lower transformer layers learn more slowly than the top one.

With ``layer_lr_decay`` d below 1, the top transformer layer trains at the learning rate, each
layer below it at d times the rate of the one above, and the embeddings at d times the lowest
layer; everything else (the BERT pooler, pooling, dense heads) at the full rate. The lower layers
hold the general lexical knowledge a small fine-tuning set should not overwrite.

The rates are handed to the sentence-transformers trainer as ``learning_rate_mapping`` (parameter
name patterns -> learning rate) rather than as an optimizer built here: the trainer then keeps its
own optimizer class, its weight-decay split (no decay on biases and norms, per group) and its
scheduler, which scales every group's rate by the same warm-up and decay factor; and a resumed run
rebuilds the same groups and loads their state. The patterns are the modules' own qualified names,
found by identity, so a layer is never matched by a neighbour's prefix (``layer.1`` vs ``layer.10``).
A model whose layers cannot be found is refused in one line before any data is read.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from embedtune.errors import EmbedtuneError
from embedtune.models import layer_list
from embedtune.settings import SettingError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from torch import nn


def layer_learning_rates(
    root: nn.Module, model: SentenceTransformer, learning_rate: float, decay: float
) -> dict[str, float]:
    """``{pattern: rate}`` over the parameter names of ``root`` (the loss, whose parameters the trainer
    optimises, or the model itself) for the transformer of ``model``; empty when ``decay`` is 1."""
    if decay >= 1:
        return {}
    first = model[0] if len(model) else None
    auto_model = getattr(first, "auto_model", None)
    why = f"needs a transformer encoder as the model's first module, got {type(first).__name__}"
    if auto_model is not None:
        try:
            blocks = layer_list(auto_model)
        except EmbedtuneError as e:
            why = f"cannot find the transformer layers of {type(auto_model).__name__}"
            raise SettingError("layer_lr_decay", why) from e
        embeddings = getattr(auto_model, "embeddings", None) or auto_model.get_input_embeddings()
    if auto_model is None or not blocks:
        raise SettingError("layer_lr_decay", why)
    names = {id(module): name for name, module in root.named_modules()}
    top = len(blocks) - 1
    rates = {_pattern(names[id(block)]): learning_rate * decay ** (top - i) for i, block in enumerate(blocks)}
    rates[_pattern(names[id(embeddings)])] = learning_rate * decay ** len(blocks)
    return rates


def _pattern(module: str) -> str:
    """A regular expression for the parameters of ``module`` and of nothing else."""
    return f"^{re.escape(module)}\\." if module else ".*"
