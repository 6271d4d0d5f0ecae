"""The one exact top-k against brute force: ids, order (ties by row) and fp32 scores, in every mode and shape."""

from __future__ import annotations

import numpy as np
import pytest

from embedtune import ranking
from embedtune.errors import EmbedtuneError
from embedtune.ranking import ExactTopK, row_scores, top_k


def reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: sort every row whole by (score descending, column ascending), keep the first ``k``."""
    columns = np.array([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores], dtype=np.int64)
    columns = columns.reshape(len(scores), min(k, scores.shape[1]))
    return np.take_along_axis(scores, columns, axis=1), columns


def dyadic(rng: np.random.Generator, rows: int, dim: int = 8) -> np.ndarray:
    """Vectors of quarters in -1..1: every inner product is exact in bf16 and fp32, so ties are exact ties."""
    return rng.integers(-4, 5, size=(rows, dim)).astype(np.float32) / 4


def unit(rng: np.random.Generator, rows: int, dim: int = 16) -> np.ndarray:
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("k", [1, 3, 10, 39, 40, 41, 100])
def test_top_k_of_a_score_matrix_is_the_head_of_the_full_ranking(k):
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 4, size=(25, 40)).astype(np.float32)  # ties everywhere, across every cut
    scores[3] = 0  # a row of nothing but ties (BM25's unmatched documents)
    got_scores, got_columns = top_k(scores, k)
    want_scores, want_columns = reference(scores, k)
    np.testing.assert_array_equal(got_columns, want_columns)
    np.testing.assert_array_equal(got_scores, want_scores)
    assert got_columns.dtype == np.int64 and got_scores.dtype == np.float32


def test_top_k_of_nothing():
    scores = np.zeros((0, 5), dtype=np.float32)
    assert [a.shape for a in top_k(scores, 3)] == [(0, 3), (0, 3)]
    assert [a.shape for a in top_k(np.ones((2, 5), dtype=np.float32), 0)] == [(2, 0), (2, 0)]
    assert [a.shape for a in top_k(np.ones((2, 0), dtype=np.float32), 4)] == [(2, 0), (2, 0)]
    with pytest.raises(EmbedtuneError, match="k must be at least 0, got -1"):
        top_k(scores, -1)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("k", [1, 5, 12, 59, 60, 61, 500])
def test_exact_search_with_ties_equals_brute_force(precision, k):
    rng = np.random.default_rng(7)
    documents = np.vstack([dyadic(rng, 40), dyadic(rng, 10), dyadic(rng, 10)])
    documents[50:] = documents[:10]  # ten documents twice: tied pairs far apart in row order
    queries = dyadic(rng, 30)
    scores, rows = ExactTopK(documents, precision).search(queries, k)
    want_scores, want_rows = reference(queries.astype(np.float64) @ documents.T.astype(np.float64), k)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
    assert scores.dtype == np.float32 and rows.dtype == np.int64 and rows.shape == (30, min(k, 60))


def test_bf16_candidates_rescored_give_fp32_ids_and_scores():
    rng = np.random.default_rng(0)
    documents, queries = unit(rng, 300), unit(rng, 40)
    exact = queries.astype(np.float64) @ documents.T.astype(np.float64)
    fp32_scores, fp32_rows = ExactTopK(documents, "fp32").search(queries, 10)
    bf16_scores, bf16_rows = ExactTopK(documents, "bf16").search(queries, 10)
    np.testing.assert_array_equal(fp32_rows, reference(exact, 10)[1])
    np.testing.assert_array_equal(bf16_rows, fp32_rows)
    np.testing.assert_array_equal(bf16_scores, fp32_scores)  # the same fp32 dot products, whatever found them
    np.testing.assert_allclose(fp32_scores, np.take_along_axis(exact, fp32_rows, axis=1), atol=1e-6)


def test_blocks_of_queries_change_nothing(monkeypatch):
    rng = np.random.default_rng(3)
    documents, queries = unit(rng, 200), unit(rng, 50)
    whole = ExactTopK(documents).search(queries, 7)
    monkeypatch.setattr(ranking, "_SCAN_CELLS", 3 * 200)  # three queries a block
    monkeypatch.setattr(ranking, "_RESCORE_CELLS", 2 * (7 + ranking.RESCORE_EXTRA) * 16)  # two a rescoring block
    blocked = ExactTopK(documents).search(queries, 7)
    for a, b in zip(whole, blocked, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_memory_mapped_corpus_is_scanned_block_by_block_never_whole(tmp_path, monkeypatch, precision):
    rng = np.random.default_rng(5)
    documents = np.vstack([unit(rng, 95), unit(rng, 5)])
    documents[97] = documents[3]  # a tie across two blocks
    np.save(tmp_path / "vectors.npy", documents)
    mapped = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    queries = np.vstack([unit(rng, 20), documents[3:4]])
    in_memory = ExactTopK(documents, precision).search(queries, 12)

    monkeypatch.setattr(ranking, "MAPPED_BLOCK", 16)
    scanned = []
    convert = ExactTopK._scan_matrix

    def spy(self, block):
        scanned.append(len(block))
        return convert(self, block)

    monkeypatch.setattr(ExactTopK, "_scan_matrix", spy)
    searcher = ExactTopK(mapped, precision)
    assert scanned == []  # nothing read at construction
    scores, rows = searcher.search(queries, 12)
    assert scanned == [16] * 6 + [4]  # one pass, a block at a time
    np.testing.assert_array_equal(rows, in_memory[1])
    np.testing.assert_array_equal(scores, in_memory[0])
    assert rows[-1, :2].tolist() == [3, 97]  # the query's own vector and its copy: tied, lower row first


def test_k_beyond_the_corpus_no_queries_and_no_documents():
    rng = np.random.default_rng(1)
    documents, queries = unit(rng, 6), unit(rng, 4)
    scores, rows = ExactTopK(documents).search(queries, 50)
    assert rows.shape == scores.shape == (4, 6) and sorted(rows[0]) == list(range(6))
    assert [a.shape for a in ExactTopK(documents).search(queries[:0], 5)] == [(0, 5), (0, 5)]
    assert [a.shape for a in ExactTopK(documents[:0]).search(queries, 5)] == [(4, 0), (4, 0)]
    assert [a.shape for a in ExactTopK(documents).search(queries, 0)] == [(4, 0), (4, 0)]
    with pytest.raises(EmbedtuneError, match="precision must be one of fp32, bf16, got 'fp16'"):
        ExactTopK(documents, "fp16")


def test_row_scores_are_the_dot_products_and_minus_infinity_for_no_result():
    rng = np.random.default_rng(2)
    documents, queries = unit(rng, 10), unit(rng, 3)
    rows = np.array([[4, 0, -1], [9, 9, 2], [-1, -1, -1]])
    got = row_scores(queries, documents, rows)
    want = np.where(rows >= 0, np.einsum("qd,qkd->qk", queries, documents[np.maximum(rows, 0)]), -np.inf)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got.dtype == np.float32 and np.isneginf(got[2]).all()
