"""Query assignment: proportions, near-duplicates and shared documents kept on one side, seeded, refusals."""

from __future__ import annotations

import pytest

from embedtune.errors import EmbedtuneError
from embedtune.settings import SettingError
from embedtune.splits import SplitSettings, assign_queries, duplicate_key, split_targets


def _collection(n: int = 200):
    """``n`` queries: every 10th has a near-duplicate twin (case, spacing, punctuation), every 7th
    shares its document with the next query, the rest have a document of their own."""
    texts, docs = {}, {}
    for i in range(n):
        texts[f"q{i}"] = f"How do I install package {i // 2 if i % 10 == 1 else i}?"
        docs[f"q{i}"] = [f"doc {i - 1 if i % 7 == 1 else i}"]
    for i in range(1, n, 10):  # q1 twins q0's text, q11 twins q10's...
        texts[f"q{i}"] = texts[f"q{i - 1}"].upper().replace(" ", "  ").rstrip("?") + " !"
    return texts, docs


def _sides(assignment, keys):
    """Each key's set of splits, for keys mapping query -> list of group keys."""
    sides: dict[str, set[str]] = {}
    for q, split in assignment.split_of.items():
        for key in keys[q]:
            sides.setdefault(key, set()).add(split)
    return sides


def test_duplicate_key_ignores_case_spacing_and_punctuation():
    assert duplicate_key("How do I  install Vim?") == duplicate_key("how do i install vim") == "how do i install vim"
    assert duplicate_key("\uff56\uff49\uff4d") == "vim"  # full-width forms folded
    assert duplicate_key("vim") != duplicate_key("vi m")


@pytest.mark.parametrize("ratios", [(0.7, 0.2, 0.1), (0.8, 0.2), (0.5, 0.25, 0.25), (0.6, 0.0, 0.4)])
def test_proportions_within_one_query_and_groups_on_one_side(ratios):
    texts, docs = _collection()
    a = assign_queries(texts, docs, SplitSettings(ratios=ratios))
    counts = {s: list(a.split_of.values()).count(s) for s in a.targets}
    assert set(counts) == {s for s, r in zip(("train", "dev", "test"), ratios, strict=False) if r > 0}
    for split, ratio in zip(("train", "dev", "test"), ratios, strict=False):
        if ratio:
            assert abs(counts[split] - ratio * len(texts)) <= 1, counts
    dup_sides = _sides(a, {q: [duplicate_key(t)] for q, t in texts.items()})
    assert all(len(s) == 1 for s in dup_sides.values())  # never on two sides, whatever the ratios
    assert all(len(s) == 1 for s in _sides(a, docs).values())  # the data allows it here, so it is done
    assert a.documents_across_splits == 0
    assert a.duplicate_queries == 2 * len(range(1, 200, 10))
    assert a.groups_kept_together >= 20 and a.queries_kept_together >= 40


def test_seeded_and_deterministic():
    texts, docs = _collection()
    one = assign_queries(texts, docs, SplitSettings(seed=7)).split_of
    assert one == assign_queries(dict(texts), dict(docs), SplitSettings(seed=7)).split_of
    assert one != assign_queries(texts, docs, SplitSettings(seed=8)).split_of


def test_a_hub_document_is_cut_and_counted_rather_than_break_the_ratios():
    texts = {f"q{i}": f"query {i}" for i in range(100)}
    docs = {q: ["hub"] for q in texts}  # every query shares one document: it cannot stay on one side
    a = assign_queries(texts, docs, SplitSettings())
    assert a.targets == {"train": 70, "dev": 20, "test": 10}
    assert {s: list(a.split_of.values()).count(s) for s in a.targets} == a.targets
    assert a.largest_group <= a.group_cap == 5
    assert a.documents_across_splits == 1
    off = assign_queries(texts, docs, SplitSettings(group_documents=False))
    assert off.largest_group == 1 and off.documents_across_splits == 1


def test_targets_round_by_largest_remainder_and_refuse_an_empty_split():
    assert split_targets(10, {"train": 0.7, "dev": 0.2, "test": 0.1}) == {"train": 7, "dev": 2, "test": 1}
    with pytest.raises(
        EmbedtuneError,
        match=r"split 'test' \(ratio 0.1\) would hold no query: 3 queries give "
        r"train 2, dev 1, test 0; give at least 10 queries",
    ):
        split_targets(3, {"train": 0.7, "dev": 0.2, "test": 0.1})
    with pytest.raises(EmbedtuneError, match="no queries"):
        split_targets(0, {"train": 1.0})


def test_duplicates_too_big_to_spread_are_refused_naming_the_split():
    texts = {f"q{i}": "the same question" for i in range(9)} | {"q9": "another"}
    with pytest.raises(EmbedtuneError, match=r"split 'test' got no query: .*largest: 9.*train 9, dev 1, test 0"):
        assign_queries(texts, {q: [q] for q in texts}, SplitSettings())


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.7, 0.2, 0.2), r"ratios: must sum to 1, got 1.1 \(0.7 \+ 0.2 \+ 0.2\)"),
        ((0.5, 0.6, -0.1), r"ratios: must be at least 0, got -0.1"),
        ((1.0,), r"ratios: expected 2 or 3 values"),
        ((0.25, 0.25, 0.25, 0.25), r"ratios: expected 2 or 3 values"),
    ],
)
def test_bad_ratios_are_setting_errors(ratios, message):
    with pytest.raises(SettingError, match=message):
        SplitSettings(ratios=ratios)
