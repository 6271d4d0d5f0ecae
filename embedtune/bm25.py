"""BM25 retrieval over a corpus in memory: the lexical baseline, and a source of lexical candidates.

A thin wrapper around `bm25s <https://github.com/xhluca/bm25s>`_ (sparse scoring in numpy/scipy)
with the analysis BEIR's Elasticsearch baseline uses: lower-casing, English stop words and Snowball
stemming, Lucene's BM25 with ``k1 = 1.2`` and ``b = 0.75``. Documents that share no term with a
query score 0 and are not returned, so a query of stop words only gets no results rather than
arbitrary ones.
"""

from __future__ import annotations

from collections.abc import Mapping

from embedtune.errors import EmbedtuneError

Hits = list[tuple[str, float]]  # (doc_id, score), best first


class BM25:
    """A BM25 index of ``corpus`` (``{doc_id: text}``), built once for any number of searches."""

    def __init__(
        self,
        corpus: Mapping[str, str],
        *,
        k1: float = 1.2,
        b: float = 0.75,
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
