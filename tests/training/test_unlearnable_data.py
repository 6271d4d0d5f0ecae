"""Data a loss cannot learn from trains with a warning, not a silent loss of 0; a short run's mean loss is never NaN."""

from __future__ import annotations

import json
import math
import warnings

import pytest
from helpers import train_config

from embedtune.errors import EmbedtuneWarning
from embedtune.training import train


def _pairs(path, rows):
    path.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in rows))
    return path


def _train(tmp_path, tiny_st, rows, **settings):
    data = _pairs(tmp_path / "pairs.jsonl", rows)
    config = train_config(tmp_path / "m", tiny_st, data, **{"dev": False, "max_steps": 2, "batch_size": 4, **settings})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config)
    return result, [str(w.message) for w in caught if issubclass(w.category, EmbedtuneWarning)]


@pytest.mark.parametrize("rows", [[("a query", "its document")], [("a query", "its document")] * 20], ids=["1", "20"])
def test_one_pair_however_often_repeated_is_said_to_teach_nothing(tmp_path, tiny_st, rows):
    _, said = _train(tmp_path, tiny_st, rows)
    assert any("learns nothing" in m for m in said), said
    assert any("loss was exactly 0" in m for m in said), said


def test_fewer_distinct_rows_than_a_batch_is_said(tmp_path, tiny_st):
    rows = [("web server", "nginx"), ("text editor", "vim"), ("game", "tetris")]
    _, said = _train(tmp_path, tiny_st, rows * 3, batch_size=8)
    assert any("3 distinct rows, fewer than a batch of 8" in m for m in said), said


def test_varied_data_trains_without_these_warnings_and_a_short_run_has_a_mean_loss(tmp_path, tiny_st):
    rows = [(f"query {i} about {w}", f"document {i} on {w}") for i, w in enumerate("abcdefghij")]
    result, said = _train(tmp_path, tiny_st, rows)
    assert not [m for m in said if "learns nothing" in m or "distinct rows" in m or "exactly 0" in m]
    first, last = result.mean_loss(0, 0.2), result.mean_loss(0.8, 1)
    assert first is not None and last is not None and not math.isnan(first) and not math.isnan(last)
