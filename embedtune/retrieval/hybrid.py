"""Hybrid retrieval: dense and BM25 lists fused, the search settings that choose a mode, and index retrievers by mode.

:class:`SearchSettings` is declared once for ``search``, ``eval`` and the service: the mode
(``dense``, ``bm25``, ``hybrid``; default: what the index's calibration on real queries chose, else
dense), the fusion and its weight (default: the calibrated ones), how many candidates each list
contributes (k' >= k), and an optional cross-encoder reranking of the top ``rerank_depth``.
:class:`HybridRetriever` fuses any two retrievers of one corpus (:mod:`embedtune.retrieval.fusion`);
:func:`index_retriever` makes the retriever of a built index in a mode, which evaluation scores, so
the three modes are compared on the very search ``embedtune search`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.retrieval.base import Retriever
from embedtune.retrieval.fusion import FUSIONS, fuse, fused_scores
from embedtune.retrieval.index import IndexRetriever
from embedtune.retrieval.rerank import Reranker, RerankRetriever, check_depth
from embedtune.settings import setting, validate

if TYPE_CHECKING:
    from embedtune.index import Index, Manifest, Searcher

MODES = ("dense", "bm25", "hybrid")
DEFAULT_FUSION, DEFAULT_WEIGHT = "minmax", 0.5  # used until an index is calibrated on queries


@dataclass(frozen=True)
class SearchSettings:
    """How an index is searched: mode, fusion, and reranking (defaults come from the index's calibration)."""

    mode: str | None = setting(
        None,
        help="dense = vectors, bm25 = lexical, hybrid = both fused. Default: what 'index calibrate' found best "
        "on real queries ('index info' shows it), else dense.",
        choices=MODES,
    )
    fusion: str | None = setting(
        None,
        help="How hybrid fuses the lists: minmax / zscore = normalised convex combination, rrf = reciprocal "
        "rank. Default: the calibrated one, else minmax.",
        choices=FUSIONS,
    )
    weight: float | None = setting(
        None,
        help="Weight of the dense list in hybrid fusion (BM25 gets 1 - weight). Default: the calibrated one, else 0.5.",
        min=0,
        max=1,
        flag="--fusion-weight",
    )
    depth: int = setting(
        100,
        help="Candidates each list contributes to hybrid fusion (at least k are used).",
        min=1,
        flag="--fusion-depth",
    )
    rerank: Path | None = setting(
        None, help="Rerank the top --rerank-depth hits with this sentence-transformers CrossEncoder directory."
    )
    rerank_depth: int = setting(50, help="Hits rescored by the cross-encoder (at least k).", min=1)

    def __post_init__(self) -> None:
        validate(self)

    def check_k(self, k: int) -> None:
        """Refuse a rerank depth below ``k``: only reranked candidates are returned."""
        if self.rerank is not None:
            check_depth(self.rerank_depth, k)

    def resolved(self, manifest: Manifest) -> tuple[str, str, float]:
        """``(mode, fusion, dense weight)``: those given, else the index's calibrated ones, else the defaults."""
        fusion = manifest.query_calibration.get("fusion", {}) if manifest.query_calibration else {}
        mode = self.mode or manifest.default_mode
        if mode != "dense" and not manifest.lexical:
            raise EmbedtuneError(
                f"index '{manifest.name}' has no BM25 side (built without bm25), so it cannot search in {mode} mode; "
                "search in dense mode or rebuild it with bm25"
            )
        method = self.fusion or str(fusion.get("method", DEFAULT_FUSION))
        weight = self.weight if self.weight is not None else float(fusion.get("weight", DEFAULT_WEIGHT))
        return mode, method, weight


class HybridRetriever:
    """Dense and lexical retrievers of one corpus, fused over each one's top ``depth`` (a :class:`Retriever`)."""

    def __init__(self, dense: Retriever, lexical: Retriever, *, method: str, weight: float, depth: int) -> None:
        self.retrievers, self.method, self.weights, self.depth = (dense, lexical), method, (weight, 1 - weight), depth
        self.name = f"hybrid:{method}:{weight:g}"

    def _runs(self, query_rows: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [r.search(query_rows, max(self.depth, k)) for r in self.retrievers]

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return fuse(self._runs(query_rows, k), k, self.method, self.weights)

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        """The fused score each pair would have in the fused ranking (0 / the lists' floor when absent)."""
        runs = self._runs(query_rows, self.depth)
        return fused_scores(runs, np.asarray(doc_rows)[:, None], self.method, self.weights)[:, 0].astype(np.float32)


class LexicalIndexRetriever:
    """The BM25 side of a built index, answering in rows of ``doc_ids`` (a :class:`Retriever`)."""

    def __init__(self, index: Index, queries: Sequence[str], *, doc_ids: Sequence[str] | None = None) -> None:
        self.index, self.lexical, self.queries = index, index.lexical, list(queries)
        self.name = f"bm25:index:{index.name}"
        self.doc_ids = list(doc_ids) if doc_ids is not None else index.doc_ids
        self._row_map = index.row_map(self.doc_ids)
        self._terms = self.lexical.bm25.query_terms(self.queries)

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, columns = self.lexical.bm25.top_k(self._terms[query_rows], k)
        fids = np.where(scores > 0, self.lexical.fids[columns], -1)
        return scores, np.where(fids >= 0, self._row_map[np.maximum(fids, 0)], -1)

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        fid_of_row = np.full(len(self.doc_ids), -1, dtype=np.int64)
        indexed = np.flatnonzero(self._row_map >= 0)
        fid_of_row[self._row_map[indexed]] = indexed
        columns = np.searchsorted(self.lexical.fids, fid_of_row[doc_rows])
        return self.lexical.bm25.pair_scores(self._terms[query_rows], columns)


def index_retriever(
    index: Index,
    queries: Sequence[str],
    settings: SearchSettings,
    *,
    searcher: Searcher | None = None,
    reranker: Reranker | None = None,
    show_progress: bool = True,
) -> Retriever:
    """The retriever of ``index`` in ``settings``' mode (reranked when asked), in rows of the index's documents."""
    mode, method, weight = settings.resolved(index.manifest)
    doc_ids = index.doc_ids
    dense = lambda: IndexRetriever(index, queries, doc_ids=doc_ids, searcher=searcher, show_progress=show_progress)  # noqa: E731
    if mode == "dense":
        retriever: Retriever = dense()
    elif mode == "bm25":
        retriever = LexicalIndexRetriever(index, queries, doc_ids=doc_ids)
    else:
        lexical = LexicalIndexRetriever(index, queries, doc_ids=doc_ids)
        retriever = HybridRetriever(dense(), lexical, method=method, weight=weight, depth=settings.depth)
    retriever.name = f"index:{index.name}:{mode}"
    if settings.rerank is None and reranker is None:
        return retriever
    reranker = reranker or Reranker(settings.rerank)
    return RerankRetriever(retriever, reranker, list(queries), index.texts, settings.rerank_depth)
