"""The retrievers against exact search and against each other: dense, BM25 and index-backed rows and scores."""

from __future__ import annotations

import numpy as np

from embedtune.data import load_split
from embedtune.index import Index, build_index
from embedtune.retrieval import BM25Retriever, DenseRetriever, RetrievalInput, Searcher


def test_dense_retriever_matches_exact_search():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = queries @ docs.T
    for precision in ("fp32", "bf16"):
        retriever = DenseRetriever(docs, queries, precision=precision)
        rows_in = np.arange(5, 40)
        scores, rows = retriever.search(rows_in, 10)
        np.testing.assert_array_equal(rows, np.argsort(-exact[rows_in], axis=1)[:, :10])
        np.testing.assert_allclose(scores, np.take_along_axis(exact[rows_in], rows, axis=1), atol=1e-5)
        np.testing.assert_allclose(retriever.pair_scores(rows_in, rows[:, 3]), scores[:, 3], atol=1e-5)


def test_bm25_retriever_ranks_and_scores_pairs(beir_dir):
    data = RetrievalInput.from_split(load_split(beir_dir, "train"))
    retriever = BM25Retriever(data, show_progress=False)
    query_rows = np.arange(len(data.query_ids))
    scores, rows = retriever.search(query_rows, 3)
    top = {data.query_ids[q]: data.doc_ids[r] for q, r in zip(query_rows, rows[:, 0], strict=True)}
    assert top["q-web"] == "nginx" and top["q-edit"] == "vim" and top["q-py"] == "python3"
    assert np.all(np.diff(scores, axis=1) <= 0) and scores[0, 0] > 0
    np.testing.assert_allclose(retriever.pair_scores(query_rows, rows[:, 1]), scores[:, 1], rtol=1e-5)


def test_bm25_matches_only_leaves_documents_without_a_shared_term_out(beir_dir):
    data = RetrievalInput.from_split(load_split(beir_dir, "train"))
    everything = BM25Retriever(data, show_progress=False)
    matching = BM25Retriever(data, matches_only=True, show_progress=False)
    query_rows = np.arange(len(data.query_ids))
    scores, rows = everything.search(query_rows, len(data.doc_ids))
    assert (rows >= 0).all() and (scores == 0).any()  # every document ranked, non-matching ones at 0
    only_scores, only_rows = matching.search(query_rows, len(data.doc_ids))
    np.testing.assert_array_equal(only_rows >= 0, scores > 0)
    np.testing.assert_array_equal(only_rows[only_rows >= 0], rows[scores > 0])
    np.testing.assert_allclose(only_scores, scores)


def test_index_retriever_answers_in_rows_like_the_exact_search_of_its_vectors(tmp_path, tiny_st, beir_dir):
    build_index(beir_dir, "tiny", model=tiny_st, indexes_dir=tmp_path / "idx", show_progress=False)
    index = Index.load("tiny", tmp_path / "idx")
    data = RetrievalInput.from_split(load_split(beir_dir, "train"))
    searcher = Searcher(index)
    retriever = searcher.retriever(data.query_texts, show_progress=False)
    assert retriever.name == "index:tiny" and retriever.doc_ids == data.doc_ids
    vectors = index.faiss_index.reconstruct_n(0, index.faiss_index.ntotal)
    exact = DenseRetriever(vectors, searcher.encode_queries(data.query_texts), precision="fp32")
    query_rows = np.arange(len(data.query_ids))
    scores, rows = retriever.search(query_rows, 3)
    exact_scores, exact_rows = exact.search(query_rows, 3)
    exact_all = exact.search(query_rows, len(data.doc_ids))
    np.testing.assert_array_equal(rows, exact_rows)  # a small index is a flat one: exact search
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    np.testing.assert_allclose(retriever.pair_scores(query_rows, rows[:, 1]), scores[:, 1], atol=1e-5)
    _, capped = retriever.search(query_rows[:1], 20)  # k is capped at the corpus, as for every retriever
    assert capped.shape == (1, len(data.doc_ids))

    # Rows of another corpus list: indexed documents outside it are never returned, the rest are its rows.
    subset = data.doc_ids[:4][::-1]
    on_subset = searcher.retriever(data.query_texts, doc_ids=subset, show_progress=False)
    sub_scores, sub_rows = on_subset.search(query_rows, len(data.doc_ids))
    for q in query_rows:
        kept = sub_rows[q] >= 0
        assert [subset[r] for r in sub_rows[q][kept]] == [
            data.doc_ids[r] for r in exact_all[1][q] if data.doc_ids[r] in subset
        ]
        np.testing.assert_allclose(
            on_subset.pair_scores(np.full(kept.sum(), q), sub_rows[q][kept]), sub_scores[q][kept], atol=1e-5
        )
