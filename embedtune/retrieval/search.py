"""Search of a built index in any mode, texts in, hits out: what ``embedtune search`` and the service answer with.

:class:`HybridSearcher` is an :class:`~embedtune.index.Searcher` (same constructor, same ``search``
signature, same hits) that also searches the index's BM25 side, fuses both lists, and reranks with a
cross-encoder, as :class:`~embedtune.retrieval.hybrid.SearchSettings` says. It lives here, not in
:mod:`embedtune.index`, because fusion and reranking are retrieval, a later stage than the index.
Everything works on FAISS ids until the hits are looked up, once, in the document store.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from embedtune.index import Hit, Index, Searcher
from embedtune.retrieval.fusion import fuse
from embedtune.retrieval.hybrid import SearchSettings
from embedtune.retrieval.rerank import Reranker, check_depth, rescore


class HybridSearcher(Searcher):
    """A :class:`Searcher` that searches in ``settings``' mode (default: the index's calibrated one).

    The cross-encoder of ``settings.rerank`` (or a loaded ``reranker``) is loaded once, here; a search
    whose settings name no cross-encoder is not reranked. A mode the index cannot serve (bm25 or hybrid
    without a BM25 side) is refused now, not at the first query.
    """

    def __init__(
        self,
        index: Index,
        model: str | Path | None = None,
        *,
        device: str | None = None,
        precision: str | None = None,
        backend: str = "torch",
        settings: SearchSettings | None = None,
        reranker: Reranker | None = None,
    ):
        super().__init__(index, model, device=device, precision=precision, backend=backend)
        self.settings = settings or SearchSettings()
        self.settings.resolved(index.manifest)
        if reranker is not None and self.settings.rerank is None:
            self.settings = replace(self.settings, rerank=reranker.path)
        self.reranker, self._device = reranker, device
        self._reranker_for(self.settings)

    @property
    def mode(self) -> str:
        return self.settings.resolved(self.index.manifest)[0]

    def search(
        self,
        queries: list[str],
        k: int = 10,
        *,
        show_progress: bool = False,
        nprobe: int | None = None,
        ef_search: int | None = None,
        settings: SearchSettings | None = None,
    ) -> list[list[Hit]]:
        """The top-``k`` hits per query in the mode of ``settings`` (default: this searcher's); with a
        reranker, the top ``rerank_depth`` reranked, scored by the cross-encoder."""
        settings = settings or self.settings
        if not queries:
            return []
        reranker = self._reranker_for(settings)
        if reranker is not None:
            check_depth(settings.rerank_depth, k)
        self.check(queries, k)
        fetch = settings.rerank_depth if reranker is not None else k
        scores, fids = self.ranked(queries, fetch, settings, nprobe=nprobe, ef_search=ef_search, progress=show_progress)
        if reranker is not None:
            docs = self.index.lookup({int(f) for f in fids.ravel() if f >= 0})
            scores, fids = rescore(reranker, queries, fids, lambda f: docs[f].text, k)
        return self.hits(scores, fids)

    def _reranker_for(self, settings: SearchSettings) -> Reranker | None:
        """The cross-encoder ``settings`` asks for (none: no reranking), loaded once and kept."""
        if settings.rerank is None:
            return None
        if self.reranker is None or Path(settings.rerank) != self.reranker.path:
            self.reranker = Reranker(settings.rerank, device=self._device)
        return self.reranker

    def ranked(
        self,
        queries: list[str],
        k: int,
        settings: SearchSettings,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, FAISS ids)`` of the top-``k`` per query in ``settings``' mode, before any reranking."""
        mode, method, weight = settings.resolved(self.index.manifest)
        depth = max(settings.depth, k) if mode == "hybrid" else k
        runs = []
        if mode in ("dense", "hybrid"):
            vectors = self.encode_queries(queries, show_progress=progress)
            runs.append(self.index.search_vectors(vectors, depth, nprobe=nprobe, ef_search=ef_search))
        if mode in ("bm25", "hybrid"):
            runs.append(self.index.lexical.search(queries, depth))
        if mode != "hybrid":
            return runs[0]
        return fuse(runs, k, method, (weight, 1 - weight))
