"""Metrics against values worked out by hand, and end-to-end evaluation of a model and an index."""

from __future__ import annotations

import math

import pytest
from conftest import CORPUS, write_beir

from embedtune.data import load_split
from embedtune.errors import EmbedtuneError
from embedtune.evaluate import compute_metrics, evaluate, evaluate_model
from embedtune.index import Index, build_index

QRELS = {
    "q1": {"a": 1},  # found at rank 2
    "q2": {"b": 1, "c": 1},  # b at rank 1, c at rank 3
    "q3": {"d": 2, "e": 1},  # graded: only e found, at rank 1
    "q4": {"f": 1},  # never retrieved (absent from the run)
}
RUN = {
    "q1": ["x", "a", "y"],
    "q2": ["b", "x", "c"],
    "q3": ["e", "x", "y"],
}


def test_metrics_by_hand():
    m = compute_metrics(RUN, QRELS, ks=(1, 2, 3), ndcg_ks=(3,))
    # recall@1: q1 0, q2 1/2, q3 1/2 (e of {d, e}), q4 0
    assert m["recall@1"] == pytest.approx((0 + 0.5 + 0.5 + 0) / 4)
    assert m["recall@2"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)
    assert m["recall@3"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert m["mrr@1"] == pytest.approx((0 + 1 + 1 + 0) / 4)
    assert m["mrr@3"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    # nDCG@3, linear gain rel / log2(rank + 1):
    q1 = (1 / math.log2(3)) / 1
    q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    q3 = 1 / (2 + 1 / math.log2(3))  # e (rel 1) at rank 1; ideal has d (rel 2) first
    assert m["ndcg@3"] == pytest.approx((q1 + q2 + q3 + 0) / 4)


def test_bad_k_is_an_error():
    with pytest.raises(EmbedtuneError, match="positive"):
        compute_metrics(RUN, QRELS, ks=(0, 10))


def _echo_split(tmp_path):
    """Queries whose text is their relevant document's text: any encoder ranks that document first."""
    queries = {"q-ssh": CORPUS["openssh"], "q-db": CORPUS["postgres"]}
    qrels = {"test": [("q-ssh", "openssh"), ("q-ssh", "openssh-doc"), ("q-db", "postgres")]}
    return write_beir(tmp_path / "echo", queries=queries, qrels=qrels)


def test_evaluate_model_and_index_agree_with_hand_values(tmp_path, tiny_st):
    root = _echo_split(tmp_path)
    split = load_split(root, "test")
    result = evaluate_model(tiny_st, split, ks=(1, 10), show_progress=False)
    # q-ssh: openssh first (identical text), openssh-doc somewhere in the 8 documents.
    assert result.metrics["recall@1"] == pytest.approx((0.5 + 1) / 2)
    assert result.metrics["recall@10"] == pytest.approx(1.0)
    assert result.metrics["mrr@1"] == pytest.approx(1.0)
    assert result.n_queries == 2 and result.n_documents == len(CORPUS)

    build_index(tiny_st, root, "echo", indexes_dir=tmp_path / "idx", show_progress=False)
    both = evaluate(
        root,
        "test",
        models=[str(tiny_st)],
        indexes=["echo"],
        indexes_dir=tmp_path / "idx",
        ks=(1, 10),
        show_progress=False,
    )
    assert [r.kind for r in both] == ["model", "index"]
    for name, value in both[0].metrics.items():
        assert both[1].metrics[name] == pytest.approx(value, abs=1e-6)


def test_index_from_another_corpus_is_refused(tmp_path, tiny_st):
    small = write_beir(
        tmp_path / "small",
        corpus={k: v for k, v in CORPUS.items() if k != "postgres"},
        qrels={"test": [("q-ssh", "openssh")]},
    )
    build_index(tiny_st, small, "small", indexes_dir=tmp_path / "idx", show_progress=False)
    full = load_split(write_beir(tmp_path / "full"), "test")
    from embedtune.evaluate import evaluate_index

    with pytest.raises(EmbedtuneError, match=r"lacks 1 document\(s\).*postgres"):
        evaluate_index(Index.load("small", tmp_path / "idx"), full, show_progress=False)
