"""Per-row weights: the column is checked, rows are drawn as often as their weight says, batches stay duplicate-free."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from datasets import Dataset

from embedtune.errors import DataError
from embedtune.training import distributed
from embedtune.training.sampling import BatchSamplers, MultiDatasetSampler, WeightedBatchSampler, epoch_rows
from embedtune.training.weighting import WEIGHT_RANGE, difficulty_weights
from embedtune.training_data import load_training_data


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _pairs(n: int, weights=None) -> list[dict]:
    rows = [{"query": f"query {i}", "positive": f"document {i}"} for i in range(n)]
    for row, w in zip(rows, weights or [], strict=False):
        row["weight"] = w
    return rows


@pytest.mark.parametrize(
    ("value", "problem"),
    [(0, "weight 0 is not above 0"), (-1.5, "weight -1.5 is not above 0"), ("x", "not a number: 'x'")],
)
def test_a_bad_weight_is_an_error_at_its_file_line_and_field(tmp_path, value, problem):
    path = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(3, [1, value, 2]))
    with pytest.raises(DataError) as caught:
        load_training_data(path)
    assert str(caught.value) == f"{path}:2: field 'weight': {problem}"


def test_a_non_finite_weight_in_a_csv_is_refused(tmp_path):
    path = tmp_path / "pairs.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["query", "positive", "weight"], ["a", "b", "1"], ["c", "d", "inf"]])
    with pytest.raises(DataError, match=r"pairs.csv:3: field 'weight': not a finite number: inf"):
        load_training_data(path)


@pytest.mark.parametrize(
    ("rows", "fmt", "texts"),
    [
        (
            [{"query": "q", "positive": "p", "negative": "n", "weight": 2}],
            "triplet",
            ["anchor", "positive", "negative_1"],
        ),
        ([{"sentence1": "a", "sentence2": "b", "score": 0.5, "weight": 2}], "scored-pair", ["sentence1", "sentence2"]),
    ],
)
def test_the_weight_column_is_never_a_text_column(tmp_path, rows, fmt, texts):
    data = load_training_data(_write_jsonl(tmp_path / "rows.jsonl", rows))
    assert data.format == fmt and data.text_columns == texts and data.weights == [2.0]
    assert "weights" in data.describe()


def test_rows_are_drawn_in_proportion_to_their_weight_and_batches_hold_no_text_twice():
    weights = [1.0] * 50 + [4.0] * 50
    dataset = Dataset.from_dict({"anchor": [f"q{i}" for i in range(100)], "positive": [f"d{i}" for i in range(100)]})
    sampler = BatchSamplers([(dataset, weights)])(dataset, batch_size=10, drop_last=False, seed=3)
    assert isinstance(sampler, WeightedBatchSampler) and len(sampler) == 10
    counts: Counter[int] = Counter()
    for epoch in range(40):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sum(len(b) for b in batches) == 100  # an epoch draws as many rows as there are
        assert all(len(set(b)) == len(b) for b in batches)  # a row drawn twice goes to two batches
        counts.update(i for b in batches for i in b)
    heavy = sum(counts[i] for i in range(50, 100)) / sum(counts.values())
    assert heavy == pytest.approx(0.8, abs=0.02)  # 4 / (1 + 4)
    sampler.set_epoch(7)
    assert list(sampler) == list(sampler)  # seeded by seed and epoch
    again = BatchSamplers([(dataset, weights)])(dataset, batch_size=10, drop_last=False, seed=3)
    again.set_epoch(7)
    assert list(again) == list(sampler)


def test_unweighted_data_keeps_the_plain_duplicate_free_sampler():
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    dataset = Dataset.from_dict({"anchor": ["a", "b"], "positive": ["c", "d"]})
    assert isinstance(BatchSamplers([(dataset, None)])(dataset, 2, False), NoDuplicatesBatchSampler)


def test_under_ddp_each_global_batch_of_the_draw_is_sliced_per_process(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    dataset = Dataset.from_dict({"anchor": [f"q{i}" for i in range(40)], "positive": [f"d{i}" for i in range(40)]})
    sampler = BatchSamplers([(dataset, [1.0 + i % 3 for i in range(40)])])(dataset, 4, False, seed=1)
    assert sampler.batch_size == 4 and len(sampler) % 2 == 0
    slices = list(sampler)
    assert all(len(s) == 4 for s in slices)
    for first, second in zip(slices[::2], slices[1::2], strict=True):  # one global batch: no row twice
        assert not set(first) & set(second)


def test_several_datasets_under_ddp_take_each_global_batch_from_one_dataset(monkeypatch):
    from torch.utils.data import ConcatDataset

    monkeypatch.setenv("WORLD_SIZE", "2")
    a = Dataset.from_dict({"anchor": [f"q{i}" for i in range(16)], "positive": [f"d{i}" for i in range(16)]})
    b = Dataset.from_dict({"sentence1": [f"s{i}" for i in range(24)], "sentence2": [f"t{i}" for i in range(24)]})
    samplers = [distributed.batch_sampler(d, 2, False, seed=0) for d in (a, b)]
    for mix in ("proportional", "round-robin"):
        sampler = MultiDatasetSampler(mix)(ConcatDataset([a, b]), samplers, seed=0)
        slices = list(sampler)
        assert len(slices) == len(sampler) and all(len(s) == 2 for s in slices)
        for first, second in zip(slices[::2], slices[1::2], strict=True):  # the two ranks' slices of one step
            assert (min(first) < 16) == (min(second) < 16) and not set(first) & set(second)


def test_an_epoch_counts_the_rows_the_mix_goes_through():
    assert epoch_rows("proportional", [100, 30]) == 130
    assert epoch_rows("round-robin", [100, 30]) == 60
    assert epoch_rows("round-robin", [100]) == 100


def test_difficulty_weights_are_relative_to_the_mean_and_clipped():
    low, high = WEIGHT_RANGE
    assert difficulty_weights([0.1, 0.2, 0.3]).tolist() == pytest.approx([low, 1.0, 1.5])
    assert difficulty_weights([0.0, 0.0, 3.0]).tolist() == [low, low, high]
    assert difficulty_weights([0.0, 0.0]).tolist() == [1.0, 1.0]
