"""Every loss trains the tiny real BERT on data of its shape and lowers its loss; misfits are refused."""

from __future__ import annotations

import json

import pytest
from helpers import train_config

from embedtune.errors import EmbedtuneError
from embedtune.training import LOSSES, resolve_loss, train
from embedtune.training_data import load_training_data

TOPICS = ["web server", "text editor", "compression", "puzzle game", "secure shell", "database", "compiler", "mail"]


def _rows(kind: str) -> list[dict]:
    rows = []
    for i, topic in enumerate(TOPICS):
        other = TOPICS[(i + 3) % len(TOPICS)]
        row = {"query": topic, "positive": f"a program for {topic} number {i}"}
        if kind in ("triplet", "n-tuple"):
            row["negative_1"] = f"a program for {other}"
        if kind == "n-tuple":
            row["negative_2"] = f"notes about {TOPICS[(i + 5) % len(TOPICS)]}"
            row["scores"] = [0.9, 0.4, 0.2]
        if kind == "scored-pair":
            row = {"sentence1": topic, "sentence2": row["positive"] if i % 2 else f"about {other}", "score": i % 2}
        rows.append(row)
    return rows


def _data(tmp_path, kind: str):
    path = tmp_path / f"{kind}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(kind)))
    return path


CASES = [
    ("mnrl", "pair", {}),
    ("mnrl", "n-tuple", {}),
    ("cached-mnrl", "pair", {"mini_batch_size": 2}),
    ("symmetric-mnrl", "pair", {}),
    ("cosent", "scored-pair", {}),
    ("angle", "scored-pair", {}),
    ("cosine", "scored-pair", {}),
    ("triplet", "triplet", {"triplet_margin": 0.5}),
    ("margin-mse", "n-tuple", {}),
    ("mnrl", "pair", {"matryoshka_dims": (32, 16, 8)}),
]


@pytest.mark.parametrize(("loss", "kind", "extra"), CASES, ids=[f"{c[0]}-{c[1]}-{len(c[2])}" for c in CASES])
def test_each_loss_lowers_its_loss(tmp_path, tiny_st, loss, kind, extra):
    settings = {"loss": loss, "max_steps": 24, "batch_size": 4, "learning_rate": 2e-3, "dev": False, **extra}
    config = train_config(tmp_path / "model", tiny_st, _data(tmp_path, kind), **settings)
    result = train(config)
    record = json.loads((result.output / "embedtune_train.json").read_text())
    assert record["loss"] == loss
    if extra.get("matryoshka_dims"):
        assert record["loss_module"] == "MatryoshkaLoss"
    first, last = result.mean_loss(0, 0.25), result.mean_loss(0.75, 1)
    assert last < 0.7 * first, result.losses


def test_default_loss_follows_the_data(tmp_path):
    assert resolve_loss("auto", load_training_data(_data(tmp_path, "scored-pair"))).name == "cosent"
    assert resolve_loss(None, load_training_data(_data(tmp_path, "n-tuple"))).name == "mnrl"
    assert resolve_loss("InfoNCE", load_training_data(_data(tmp_path, "pair"))).name == "mnrl"


def test_misfit_and_unknown_losses_say_what_they_need(tmp_path):
    pairs = load_training_data(_data(tmp_path, "pair"))
    with pytest.raises(EmbedtuneError, match=r"loss 'cosent' needs columns \(sentence1, sentence2, score\); the data"):
        resolve_loss("cosent", pairs)
    with pytest.raises(
        EmbedtuneError, match=r"loss 'margin-mse' needs columns \(query, positive, negative_1..n, scores"
    ):
        resolve_loss("margin-mse", pairs)
    with pytest.raises(EmbedtuneError, match=r"unknown loss 'focal'; choose one of: mnrl, cached-mnrl"):
        resolve_loss("focal", pairs)
    assert set(LOSSES) >= {
        "mnrl",
        "cached-mnrl",
        "symmetric-mnrl",
        "cosent",
        "angle",
        "cosine",
        "triplet",
        "margin-mse",
    }
