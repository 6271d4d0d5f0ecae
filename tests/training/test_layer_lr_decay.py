"""Layer-wise learning-rate decay: the optimizer's groups carry the decayed rates, and odd models are refused."""

from __future__ import annotations

import pytest
from helpers import run, train_config
from transformers import TrainerCallback

from embedtune.settings import SettingError
from embedtune.training import train
from embedtune.training.optim import layer_learning_rates


class _Groups(TrainerCallback):
    """The learning rate of each parameter (by name) after the first optimiser step."""

    def __init__(self) -> None:
        self.rates: dict[str, float] = {}

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not self.rates:
            names = {id(p): n for n, p in model.named_parameters()}
            self.rates = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"] if id(p) in names}


def test_groups_have_decayed_rates(tmp_path, tiny_bert, beir_dir):
    groups = _Groups()
    config = train_config(
        tmp_path / "m",
        tiny_bert,
        beir_dir,
        max_steps=2,
        batch_size=2,
        learning_rate=1e-3,
        layer_lr_decay=0.5,
        lr_scheduler="constant",
        dev=False,
    )
    train(config, callbacks=[groups])
    rate = groups.rates
    assert rate["0.model.encoder.layer.1.attention.self.query.weight"] == pytest.approx(1e-3)
    assert rate["0.model.encoder.layer.1.output.LayerNorm.bias"] == pytest.approx(1e-3)
    assert rate["0.model.encoder.layer.0.intermediate.dense.weight"] == pytest.approx(5e-4)
    assert rate["0.model.embeddings.word_embeddings.weight"] == pytest.approx(2.5e-4)
    assert rate["0.model.pooler.dense.weight"] == pytest.approx(1e-3)  # heads: the full rate
    from embedtune.models import load_model

    assert len(rate) == len(list(load_model(tiny_bert, device="cpu").parameters()))  # each in exactly one group


def test_off_by_default_and_bounded(tmp_path, tiny_model):
    assert layer_learning_rates(tiny_model, tiny_model, 1e-3, 1.0) == {}
    rates = layer_learning_rates(tiny_model, tiny_model, 1.0, 0.8)
    assert sorted(rates.values()) == pytest.approx([0.8**2, 0.8, 1.0])
    with pytest.raises(SettingError, match="layer_lr_decay: must be greater than 0"):
        train_config(tmp_path / "m", "default", tmp_path, layer_lr_decay=0.0)
    with pytest.raises(SettingError, match="layer_lr_decay: must be at most 1"):
        train_config(tmp_path / "m", "default", tmp_path, layer_lr_decay=1.5)


def test_a_model_without_layers_is_refused():
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.auto_model = nn.Linear(2, 2)

    model = nn.Sequential(Encoder())
    with pytest.raises(SettingError, match="layer_lr_decay: cannot find the transformer layers of Linear"):
        layer_learning_rates(model, model, 1e-3, 0.9)
    plain = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(SettingError, match="needs a transformer encoder as the model's first module, got Linear"):
        layer_learning_rates(plain, plain, 1e-3, 0.9)


def test_help_shows_the_options():
    text = run("train", "--help").output
    assert all(flag in text for flag in ("--corpus-pairs", "--query-noise", "--layer-lr-decay"))
