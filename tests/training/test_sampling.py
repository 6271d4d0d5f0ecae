"""Per-row weights: the column is checked, rows are drawn as often as their weight says, batches stay duplicate-free.
Length buckets: the same duplicate-free batches, of rows of similar length."""

from __future__ import annotations

import csv
import json
import pickle
import random
from collections import Counter

import pytest
import torch
from datasets import Dataset
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

from embedtune.errors import DataError, EmbedtuneError
from embedtune.training import distributed
from embedtune.training.sampling import (
    BatchSamplers,
    LengthBucketedBatchSampler,
    MultiDatasetSampler,
    WeightedBatchSampler,
    epoch_rows,
    text_lengths,
)
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


def _varied(n: int, seed: int = 0, docs: int | None = None) -> Dataset:
    """Pairs whose documents run from a few to 400 characters; ``docs``: that many distinct documents
    (rows sharing one must go to different batches)."""
    rng = random.Random(seed)
    sizes = [rng.randint(1, 400) for _ in range(docs or n)]
    positive = [f"doc {j} " + "x" * sizes[j] for j in (range(n) if docs is None else [i % docs for i in range(n)])]
    return Dataset.from_dict({"anchor": [f"query {i}" for i in range(n)], "positive": positive})


def _bucketed(rows: Dataset, batch_size: int = 8, drop_last: bool = False, window: int = 8, seed: int = 3):
    return BatchSamplers(length_window=window)(rows, batch_size, drop_last, generator=torch.Generator(), seed=seed)


def _plain(rows: Dataset, batch_size: int = 8, drop_last: bool = False, seed: int = 3):
    return BatchSamplers()(rows, batch_size, drop_last, generator=torch.Generator(), seed=seed)


def _epoch(sampler, epoch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def _mean_longest(rows: Dataset, batches: list[list[int]]) -> float:
    lengths = text_lengths(rows)
    return sum(int(lengths[b].max()) for b in batches) / len(batches)


def _no_text_twice(rows: Dataset, batch: list[int]) -> bool:
    texts = [t for i in batch for t in rows[i].values()]
    return len(set(texts)) == len(texts)


@pytest.mark.parametrize("drop_last", [False, True])
def test_length_buckets_serve_every_row_once_in_full_duplicate_free_batches(drop_last):
    rows = _varied(203)
    sampler = _bucketed(rows, drop_last=drop_last)
    assert isinstance(sampler, LengthBucketedBatchSampler) and sampler.window == 8
    assert len(sampler) == len(_plain(rows, drop_last=drop_last)) == (25 if drop_last else 26)
    for epoch in range(3):
        batches = _epoch(sampler, epoch)
        assert len(batches) == len(sampler)
        served = [i for b in batches for i in b]
        assert len(served) == len(set(served))  # no row twice in an epoch
        assert len(served) == (200 if drop_last else 203)  # drop_last: only the short last batch's rows go
        assert all(len(b) == 8 for b in batches[:25]) and (drop_last or len(batches[-1]) == 3)


@pytest.mark.parametrize("drop_last", [False, True])
def test_length_buckets_keep_rows_that_share_a_text_in_different_batches(drop_last):
    rows = _varied(203, docs=120)  # 83 documents in two rows each
    sampler = _bucketed(rows, drop_last=drop_last)
    for epoch in range(3):
        batches = _epoch(sampler, epoch)
        assert all(_no_text_twice(rows, b) for b in batches)
        full = [b for b in batches if len(b) == 8]
        assert batches[: len(full)] == full  # short batches come last only
        assert len(full) == 25 and len({i for b in batches for i in b}) == sum(len(b) for b in batches)
        if drop_last:
            assert len(batches) == len(sampler) == 25
        else:  # every row; as in the plain sampler, two rows left that share a text make two short batches
            assert sum(len(b) for b in batches) == 203 and len(batches) >= len(sampler) == 26


def test_length_buckets_are_seeded_by_seed_and_epoch():
    rows = _varied(160)
    assert _epoch(_bucketed(rows), 2) == _epoch(_bucketed(rows), 2)
    assert _epoch(_bucketed(rows), 2) != _epoch(_bucketed(rows), 3)
    assert _epoch(_bucketed(rows), 2) != _epoch(_bucketed(rows, seed=4), 2)
    # Which rows share a batch changes from epoch to epoch: the buckets are no fixed partition.
    first, second = ({frozenset(b) for b in _epoch(_bucketed(rows), e)} for e in (0, 1))
    assert len(first & second) < len(first) // 4


def test_length_buckets_cut_the_longest_text_of_a_batch_and_keep_the_batch_order_random():
    rows = _varied(640)
    plain = [_mean_longest(rows, _epoch(_plain(rows), e)) for e in range(3)]
    bucketed = [_epoch(_bucketed(rows), e) for e in range(3)]
    assert max(_mean_longest(rows, b) for b in bucketed) < 0.75 * min(plain)  # 0.63 here (uniform lengths)
    lengths = text_lengths(rows)
    longest = [int(lengths[b].max()) for b in bucketed[0]]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)
    assert isinstance(_bucketed(rows, window=1), NoDuplicatesBatchSampler)  # 0 or 1: off
    assert not isinstance(_bucketed(rows, window=0), LengthBucketedBatchSampler)


def test_lengths_are_the_characters_of_the_longest_text_column():
    rows = Dataset.from_dict(
        {
            "anchor": ["abc", "a", None],
            "positive": ["ab", "abcdef", "x"],
            "score": [0.5, 1.0, 0.0],
            "dataset_name": ["n" * 9] * 3,
        }
    )
    assert text_lengths(rows).tolist() == [3, 6, 1]  # the score and the dataset's name do not count
    assert text_lengths(rows.select([1, 1, 0])).tolist() == [6, 6, 3]
    given = LengthBucketedBatchSampler(rows, 2, False, window=2, lengths=[5, 1, 3], valid_label_columns=["score"])
    assert given.lengths.tolist() == [5, 1, 3]
    with pytest.raises(EmbedtuneError, match="2 lengths for 3 rows"):
        LengthBucketedBatchSampler(rows, 2, False, window=2, lengths=[5, 1])


def test_weighted_draws_are_bucketed_by_length():
    rows = _varied(400)
    weights = [1.0 + i % 3 for i in range(400)]
    bucketed = BatchSamplers([(rows, weights)], length_window=8)(rows, 8, False, seed=3)
    plain = BatchSamplers([(rows, weights)])(rows, 8, False, seed=3)
    assert isinstance(bucketed, WeightedBatchSampler) and len(bucketed) == len(plain) == 50
    for epoch in range(2):
        batches = _epoch(bucketed, epoch)
        assert len(batches) == 50 and sum(len(b) for b in batches) == 400
        assert sorted(i for b in batches for i in b) == sorted(bucketed.draw(epoch))  # the draw, bucketed
        assert all(_no_text_twice(rows, b) for b in batches)  # a row drawn twice goes to two batches
        assert _mean_longest(rows, batches) < 0.75 * _mean_longest(rows, _epoch(plain, epoch))


def test_under_ddp_the_global_batches_are_bucketed_then_sliced(monkeypatch):
    rows = _varied(330, docs=300)
    single = _epoch(_bucketed(rows, batch_size=8, drop_last=True))  # the global batches of 2 x 4
    plain = _epoch(_plain(rows, batch_size=8, drop_last=True))
    monkeypatch.setenv("WORLD_SIZE", "2")
    sampler = _bucketed(rows, batch_size=4)
    assert isinstance(sampler, distributed.SlicedBatchSampler) and isinstance(sampler.whole, LengthBucketedBatchSampler)
    slices = _epoch(sampler)
    assert len(slices) == len(sampler) == 2 * 41 and all(len(s) == 4 for s in slices)
    assert [a + b for a, b in zip(slices[::2], slices[1::2], strict=True)] == single
    assert all(_no_text_twice(rows, a + b) for a, b in zip(slices[::2], slices[1::2], strict=True))
    assert _mean_longest(rows, single) < 0.75 * _mean_longest(rows, plain)


def test_the_length_window_survives_the_trainers_pickle_and_the_weights_do_not():
    rows = _varied(40)
    again = pickle.loads(pickle.dumps(BatchSamplers([(rows, [1.0] * 40)], length_window=8)))
    assert again.length_window == 8 and again.weighted == []
    sampler = again(rows, 4, False, generator=torch.Generator(), seed=3)
    assert isinstance(sampler, LengthBucketedBatchSampler)
    assert _epoch(pickle.loads(pickle.dumps(sampler)), 1) == _epoch(sampler, 1)
    with pytest.raises(EmbedtuneError, match="length window of -1"):
        BatchSamplers(length_window=-1)
