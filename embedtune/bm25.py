"""BM25 over texts in memory: the lexical ranking every stage shares.

:class:`BM25` wraps `bm25s <https://github.com/xhluca/bm25s>`_ (sparse scoring in numpy/scipy) with
the analysis BEIR's Elasticsearch baseline uses: lower-casing, English stop words and Snowball
stemming, Lucene's BM25 with ``k1 = 1.2`` and ``b = 0.75``. Documents that share no term with a
query score 0 and are not returned, so a query of stop words only gets no results rather than
arbitrary ones. It exposes its scores as sparse matrices, so a chunk of queries is scored against
the whole corpus with one sparse product, and saves them (:meth:`BM25.state`) without re-indexing.

It sits below the pipeline's stages because several use it: an index keeps a BM25 side
(:mod:`embedtune.index.lexical`), retrieval and mining rank with it (:mod:`embedtune.retrieval.bm25`),
and training's dev evaluation takes hard candidates from it (:mod:`embedtune.training.dev`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from embedtune import ranking
from embedtune.errors import EmbedtuneError

if TYPE_CHECKING:
    import scipy.sparse as sp

_BM25_CELLS = 1 << 24  # scores held at once while ranking a chunk of queries (64 MiB of float32)

Hits = list[tuple[str, float]]  # (doc_id, score), best first

# Lucene's (and BEIR's) BM25 parameters, the baseline every comparison here uses, and BEIR's analysis.
K1 = 1.2
B = 0.75
ANALYSIS = {"stopwords": "en", "stem": "english", "lower": True}


class BM25:
    """A BM25 index of ``corpus`` (``{doc_id: text}``), built once for any number of searches."""

    def __init__(
        self,
        corpus: Mapping[str, str],
        *,
        k1: float = K1,
        b: float = B,
        stopwords: str | None = "en",
        stem: bool = True,
        show_progress: bool = False,
    ) -> None:
        import bm25s
        import Stemmer

        if not corpus:
            raise EmbedtuneError("BM25 needs at least one document")
        self.doc_ids = list(corpus)
        self._tokenizer = bm25s.tokenization.Tokenizer(
            stopwords=stopwords, stemmer=Stemmer.Stemmer("english") if stem else None
        )
        tokens = self._tokenizer.tokenize(
            list(corpus.values()), update_vocab=True, return_as="tuple", show_progress=show_progress
        )
        self._retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        self._retriever.index(tokens, show_progress=show_progress)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def search(self, queries: list[str], k: int = 10, *, show_progress: bool = False) -> list[Hits]:
        """The top-``k`` ``(doc_id, score)`` per query, best first; fewer where fewer documents match."""
        if k <= 0:
            raise EmbedtuneError(f"k must be positive, got {k}")
        k = min(k, len(self))
        vocab = self._retriever.vocab_dict
        tokens = self._tokenizer.tokenize(queries, update_vocab=False, return_as="string", show_progress=False)
        # Terms absent from the corpus (mapped to "" by the tokenizer) cannot match anything.
        tokens = [[t for t in q if t and t in vocab] for q in tokens]
        matchable = [i for i, q in enumerate(tokens) if q]
        hits: list[Hits] = [[] for _ in queries]
        if not matchable:
            return hits
        rows, scores = self._retriever.retrieve(
            [tokens[i] for i in matchable], k=k, show_progress=show_progress, n_threads=0
        )
        for i, q_rows, q_scores in zip(matchable, rows, scores, strict=True):
            hits[i] = [(self.doc_ids[r], float(s)) for r, s in zip(q_rows, q_scores, strict=True) if s > 0]
        return hits

    @cached_property
    def _term_doc(self) -> sp.csr_matrix:
        """The (term x document) score matrix bm25s precomputed at index time (a view, no copy)."""
        import scipy.sparse as sp

        s = self._retriever.scores
        shape = (len(s["indptr"]) - 1, int(s["num_docs"]))
        return sp.csr_matrix((s["data"], s["indices"], s["indptr"]), shape=shape)

    @cached_property
    def _doc_term(self) -> sp.csr_matrix:
        return self._term_doc.T.tocsr()

    def query_terms(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Term counts of each query (a repeated word counts twice, as in bm25s); words absent from
        the corpus map to the empty token, whose scores are all zero."""
        import scipy.sparse as sp

        ids = self._tokenizer.tokenize(list(queries), update_vocab=False, return_as="ids", show_progress=False)
        rows = np.repeat(np.arange(len(ids)), [len(q) for q in ids])
        cols = np.fromiter((t for q in ids for t in q), dtype=np.int64, count=len(rows))
        shape = (len(ids), self._term_doc.shape[0])
        return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)

    def score_matrix(self, query_terms: sp.csr_matrix) -> np.ndarray:
        """Dense ``(queries, documents)`` BM25 scores of ``query_terms`` rows; callers bound the chunk."""
        return (query_terms @ self._term_doc).toarray().astype(np.float32, copy=False)

    def pair_scores(self, query_terms: sp.csr_matrix, doc_rows: np.ndarray) -> np.ndarray:
        """BM25 score of query row ``i`` against document row ``doc_rows[i]``, for each ``i``."""
        doc_term = self._doc_term[doc_rows]
        return np.asarray(query_terms.multiply(doc_term).sum(axis=1), dtype=np.float32).ravel()

    def top_k(self, query_terms: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of the top-``k`` documents per query row, best first, a bounded chunk at a time.

        Documents that share no term with a query fill its ranking after the matches with score 0,
        in corpus order (:func:`embedtune.ranking.top_k` orders equal scores by row).
        """
        k = min(k, len(self))
        step = max(1, _BM25_CELLS // max(len(self), 1))
        chunks = range(0, query_terms.shape[0], step)
        found = [ranking.top_k(self.score_matrix(query_terms[s : s + step]), k) for s in chunks]
        if not found:
            return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])

    def state(self) -> dict[str, np.ndarray]:
        """What :meth:`from_state` needs: the (term x document) score matrix and the stem vocabulary.

        Query analysis needs only the stems (a query word is stemmed, then looked up), and scoring only
        the precomputed matrix, so this is the whole index.
        """
        import json

        m = self._term_doc
        vocab = json.dumps(self._tokenizer.stem_to_sid if self._tokenizer.stemmer else self._tokenizer.word_to_id)
        return {
            "data": m.data,
            "indices": m.indices,
            "indptr": m.indptr,
            "shape": np.asarray(m.shape, dtype=np.int64),
            "vocab": np.frombuffer(vocab.encode("utf-8"), dtype=np.uint8),
        }

    @classmethod
    def from_state(
        cls, state: dict[str, np.ndarray], doc_ids: list[str], *, stopwords: str | None = "en", stem: bool = True
    ) -> BM25:
        """A BM25 index as :meth:`state` saved it, over ``doc_ids`` (its columns), without re-indexing."""
        import json

        import bm25s
        import scipy.sparse as sp
        import Stemmer

        self = cls.__new__(cls)
        self.doc_ids = list(doc_ids)
        self._tokenizer = bm25s.tokenization.Tokenizer(
            stopwords=stopwords, stemmer=Stemmer.Stemmer("english") if stem else None
        )
        vocab = json.loads(bytes(state["vocab"]).decode("utf-8"))
        if stem:
            self._tokenizer.stem_to_sid = vocab
        else:
            self._tokenizer.word_to_id = vocab
        shape = tuple(int(x) for x in state["shape"])
        self.__dict__["_term_doc"] = sp.csr_matrix((state["data"], state["indices"], state["indptr"]), shape=shape)
        self._retriever = None  # searched through :meth:`top_k` only
        return self
