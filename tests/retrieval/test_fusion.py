"""Fusion of ranked lists: min-max, z-score and RRF, padding, duplicates, and pair scores consistent with rankings."""

from __future__ import annotations

import numpy as np
import pytest

from embedtune.errors import EmbedtuneError
from embedtune.retrieval.fusion import RRF_K, fuse, fused_scores

DENSE = (np.array([[0.9, 0.8, 0.1]]), np.array([[1, 2, 3]]))
LEXICAL = (np.array([[12.0, 3.0, 0.0]]), np.array([[3, 4, -1]]))  # -1: BM25 found only two documents


def test_minmax_normalises_each_list_and_missing_documents_get_the_lists_floor():
    scores, ids = fuse([DENSE, LEXICAL], 4, "minmax", (0.5, 0.5))
    # dense: 1 -> 1, 2 -> 0.875, 3 -> 0; bm25: 3 -> 1, 4 -> 0; absent -> 0. 1 and 3 tie: 3, in both lists, first.
    assert ids.tolist() == [[3, 1, 2, 4]]
    np.testing.assert_allclose(scores, [[0.5, 0.5, 0.4375, 0.0]])


def test_weights_one_and_zero_give_back_one_list():
    assert fuse([DENSE, LEXICAL], 3, "minmax", (1.0, 0.0))[1].tolist() == [[1, 2, 3]]
    assert fuse([DENSE, LEXICAL], 2, "zscore", (0.0, 1.0))[1].tolist() == [[3, 4]]


def test_rrf_adds_reciprocal_ranks_and_a_document_in_both_lists_counts_once():
    scores, ids = fuse([DENSE, LEXICAL], 5, "rrf", (1.0, 1.0))
    assert ids[0, 0] == 3 and len(set(ids[0][ids[0] >= 0].tolist())) == (ids[0] >= 0).sum() == 4
    assert scores[0, 0] == pytest.approx(1 / (RRF_K + 3) + 1 / (RRF_K + 1))
    assert ids[0, 4] == -1 and scores[0, 4] == 0  # only four distinct documents


def test_zscore_missing_document_is_not_ranked_above_a_retrieved_one():
    scores, ids = fuse([DENSE, LEXICAL], 4, "zscore", (0.5, 0.5))
    assert ids.tolist() == [[1, 3, 2, 4]] and np.all(np.diff(scores[0]) <= 0)


def test_pair_scores_equal_the_fused_ranking_scores():
    scores, ids = fuse([DENSE, LEXICAL], 4, "minmax", (0.3, 0.7))
    np.testing.assert_allclose(fused_scores([DENSE, LEXICAL], ids, "minmax", (0.3, 0.7)), scores, rtol=1e-6)


def test_queries_without_results_and_bad_arguments():
    empty = (np.zeros((1, 2)), np.full((1, 2), -1))
    _, ids = fuse([empty, empty], 2, "minmax", (0.5, 0.5))
    assert ids.tolist() == [[-1, -1]]
    with pytest.raises(EmbedtuneError, match="unknown fusion 'sum'"):
        fuse([DENSE, LEXICAL], 2, "sum", (0.5, 0.5))
    with pytest.raises(EmbedtuneError, match="one non-negative weight per list"):
        fuse([DENSE, LEXICAL], 2, "rrf", (0.0, 0.0))
    with pytest.raises(EmbedtuneError, match="k must be positive"):
        fuse([DENSE, LEXICAL], 0, "rrf", (0.5, 0.5))
