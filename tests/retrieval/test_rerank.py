"""Reranking and teacher scoring behind the Retriever contract, with a stand-in cross-encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedtune.retrieval import RerankRetriever, ScorerRetriever
from embedtune.retrieval.rerank import Reranker

DOCS = ["a", "bb", "ccc", "dddd", "eeeee"]


class _Base:
    name = "base"

    def search(self, query_rows, k):
        rows = np.tile(np.arange(5), (len(query_rows), 1))[:, :k]  # base order: a, bb, ccc, ...
        return np.ones(rows.shape, dtype=np.float32), rows


class _LengthScorer(Reranker):
    """Scores a pair by the document's length: reverses the base order."""

    def __init__(self) -> None:
        self.path = Path("length")

    def score(self, queries, documents):
        return np.asarray([float(len(d)) for d in documents], dtype=np.float32)


def test_rerank_sorts_the_head_and_keeps_the_tail_below_it_in_base_order():
    retriever = RerankRetriever(_Base(), _LengthScorer(), ["q"], DOCS, depth=3)
    scores, rows = retriever.search(np.array([0]), 5)
    assert rows.tolist() == [[2, 1, 0, 3, 4]]  # ccc, bb, a reranked; dddd, eeeee after them, as base ranked them
    assert np.all(np.diff(scores[0]) < 0) and scores[0, :3].tolist() == [3.0, 2.0, 1.0]
    assert retriever.search(np.array([0]), 2)[1].tolist() == [[2, 1]]
    np.testing.assert_allclose(retriever.pair_scores(np.array([0, 0]), np.array([4, 0])), [5.0, 1.0])


def test_scorer_keeps_the_base_ranking_with_the_teachers_scores():
    scores, rows = ScorerRetriever(_Base(), _LengthScorer(), ["q"], DOCS).search(np.array([0]), 4)
    assert rows.tolist() == [[0, 1, 2, 3]] and scores.tolist() == [[1.0, 2.0, 3.0, 4.0]]
