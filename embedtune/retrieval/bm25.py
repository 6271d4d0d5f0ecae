"""BM25 over a corpus in memory, behind the Retriever contract: the lexical baseline and a source of lexical candidates.

The index itself (:class:`~embedtune.bm25.BM25`: bm25s with BEIR's analysis, Lucene's
``k1 = 1.2`` and ``b = 0.75``) lives in :mod:`embedtune.bm25` (an index saves it beside its vectors,
:mod:`embedtune.index.lexical`); it is re-exported here. :class:`BM25Retriever` (what mining and evaluation use)
scores a chunk of queries against the whole corpus with one sparse product, far faster than bm25s'
per-query loop, and reads the score of any (query, document) pair without scoring the rest.
"""

from __future__ import annotations

import numpy as np

from embedtune.bm25 import BM25, K1, B, Hits
from embedtune.retrieval.base import RetrievalInput

__all__ = ["BM25", "K1", "B", "BM25Retriever", "Hits"]


class BM25Retriever:
    """BM25 over the corpus of a :class:`RetrievalInput`, a chunk of queries per sparse product.

    Scores are raw BM25, not cosines. ``matches_only``: documents that share no term with a query
    (score 0) are not returned (row -1), as :meth:`BM25.search` does, so a query of stop words only
    gets no results; without it they fill the ranking after the matches (mining may take them as
    negatives).
    """

    name = "bm25"

    def __init__(
        self,
        data: RetrievalInput,
        *,
        k1: float = K1,
        b: float = B,
        matches_only: bool = False,
        show_progress: bool = True,
    ) -> None:
        corpus = {str(i): text for i, text in enumerate(data.doc_texts)}
        self.bm25 = BM25(corpus, k1=k1, b=b, show_progress=show_progress)
        self.query_terms = self.bm25.query_terms(data.query_texts)
        self.matches_only = matches_only

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.bm25.top_k(self.query_terms[query_rows], k)
        if self.matches_only:
            rows[scores <= 0] = -1
        return scores, rows

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        return self.bm25.pair_scores(self.query_terms[query_rows], doc_rows)
