"""Lexical (BM25) scoring of queries against a corpus, for mining negatives without a neural model.

A thin layer over bm25s (Lucene's BM25 variant, scores precomputed per token and document at index
time). bm25s scores one query at a time in Python; here a chunk of queries is scored by one sparse
matrix product, which is what makes BM25 mining of 50,000 queries a matter of seconds, and the score
of any (query, document) pair can be read without scoring the whole corpus.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class BM25Scorer:
    """BM25 over a fixed corpus (document ``i`` is row ``i``) for a fixed list of queries.

    ``k1``/``b`` are bm25s' defaults (Lucene's). English stopwords are dropped; words of a query that
    never occur in the corpus score nothing.
    """

    def __init__(
        self,
        corpus: Sequence[str],
        queries: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        show_progress: bool = True,
    ) -> None:
        import bm25s
        import scipy.sparse as sp
        from bm25s.tokenization import Tokenizer

        tokenizer = Tokenizer(stopwords="en")
        corpus_ids = tokenizer.tokenize(list(corpus), update_vocab=True, return_as="ids", show_progress=show_progress)
        vocab = tokenizer.get_vocab_dict()
        query_ids = tokenizer.tokenize(list(queries), update_vocab=False, return_as="ids", show_progress=False)
        index = bm25s.BM25(k1=k1, b=b)
        index.index((corpus_ids, vocab), show_progress=show_progress)
        s = index.scores
        n_terms = len(s["indptr"]) - 1
        # bm25s keeps (term x document) scores in CSC layout; the transpose view is a (term, doc) CSR.
        self._term_doc = sp.csr_matrix((s["data"], s["indices"], s["indptr"]), shape=(n_terms, int(s["num_docs"])))
        self._doc_term = self._term_doc.T.tocsr()
        # Query term counts (a repeated word counts twice, as in bm25s); unknown words map to the
        # empty token, whose column is empty.
        rows = np.repeat(np.arange(len(query_ids)), [len(q) for q in query_ids])
        cols = np.fromiter((t for q in query_ids for t in q), dtype=np.int64, count=len(rows))
        self._query_term = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(query_ids), n_terms)
        )

    @property
    def n_documents(self) -> int:
        return self._term_doc.shape[1]

    def scores(self, query_rows: np.ndarray) -> np.ndarray:
        """Dense ``(len(query_rows), n_documents)`` BM25 scores; callers bound the chunk size."""
        return (self._query_term[query_rows] @ self._term_doc).toarray().astype(np.float32, copy=False)

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        """BM25 score of each (query, document) pair, without scoring the rest of the corpus."""
        products = self._query_term[query_rows].multiply(self._doc_term[doc_rows])
        return np.asarray(products.sum(axis=1), dtype=np.float32).ravel()
