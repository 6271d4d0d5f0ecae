"""The one way to rank a built index: :class:`Searcher`, and :class:`IndexRetriever`, its Retriever face.

``embedtune search``, the service, ``eval``, ``index calibrate``, mining by index and the Python API
all rank an index through :class:`Searcher`, so they give the same ids, in the same order, with the
same scores. Two stacks that each combined dense, BM25, fusion and reranking in their own way had
already drifted apart (a Python search in dense mode where the CLI searched hybrid); one code path
designs that out. A request's settings are resolved against the index once, into a
:class:`SearchPlan` (mode, fusion, weight, depths, ANN knobs), which every step then reads. The
ranking runs in FAISS-id space, in three steps anyone can reuse (calibration scores its grid of
fusions on the very first-stage lists a search makes): :meth:`Searcher.first_stage` (dense and/or
BM25 lists), :meth:`Searcher.combine` (one list, or the fusion of both) and the cross-encoder's
rerank of the head; documents are looked up in the store once, at the end.

It works over any :class:`~embedtune.index.Index`: a FAISS folder or a Qdrant collection (dense only).
The model is loaded through the index's fingerprint check, so an index is never searched with
vectors of another model, and queries are encoded with the index's query prompt.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtune.encoding import make_encoder
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.index import DEFAULT_INDEXES_DIR, Index
from embedtune.models import load_model
from embedtune.retrieval.fusion import FUSIONS, fuse, fused_scores
from embedtune.retrieval.rerank import Reranker, check_depth, rerank_head
from embedtune.settings import setting, validate
from embedtune.text import text_problem

if TYPE_CHECKING:
    from embedtune.retrieval.fusion import Ranked

MODES = ("dense", "bm25", "hybrid")
DEFAULT_FUSION, DEFAULT_WEIGHT = "minmax", 0.5  # used until an index is calibrated on queries
# Bounds that keep one request (of the service above all) from asking for unbounded work.
MAX_DEPTH, MAX_RERANK, MAX_KNOB = 10_000, 1_000, 1 << 16


@dataclass(frozen=True)
class SearchSettings:
    """How an index is searched: mode, fusion, and reranking (defaults come from the index's calibration).

    Declared once for ``search``, ``eval``, the service and the Python API.
    """

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
        max=MAX_DEPTH,
        flag="--fusion-depth",
    )
    rerank: Path | None = setting(
        None, help="Rerank the top --rerank-depth hits with this sentence-transformers CrossEncoder directory."
    )
    rerank_depth: int = setting(50, help="Hits rescored by the cross-encoder (at least k).", min=1, max=MAX_RERANK)
    nprobe: int | None = setting(
        None, help="IVF cells to scan (IVF indexes only; default: the calibrated value).", min=1, max=MAX_KNOB
    )
    ef_search: int | None = setting(
        None, help="HNSW beam width (HNSW indexes only; default: the calibrated value).", min=1, max=MAX_KNOB
    )

    def __post_init__(self) -> None:
        validate(self)

    def check_k(self, k: int) -> None:
        """Refuse a rerank depth below ``k``: a search returns only reranked candidates."""
        if self.rerank is not None:
            check_depth(self.rerank_depth, k)


@dataclass(frozen=True)
class SearchPlan:
    """One request's settings resolved against one index: what every step of the ranking reads.

    ``rerank`` is None when nothing reranks; ``nprobe``/``ef_search`` None mean the index's calibrated knob.
    """

    mode: str
    fusion: str
    weight: float
    depth: int
    rerank: Path | None = None
    rerank_depth: int = 50
    nprobe: int | None = None
    ef_search: int | None = None

    @classmethod
    def resolve(cls, settings: SearchSettings, index: Index) -> SearchPlan:
        """Those given, else the index's calibrated ones, else the defaults; refuses a mode the index cannot serve."""
        manifest = index.manifest
        calibrated = manifest.query_calibration.get("fusion", {}) if manifest.query_calibration else {}
        mode = settings.mode or manifest.default_mode
        if mode != "dense" and not index.has_bm25:
            raise EmbedtuneError(
                f"index '{index.name}' has no BM25 side, so it cannot search in {mode} mode: {index.no_bm25}"
            )
        return cls(
            mode=mode,
            fusion=settings.fusion or str(calibrated.get("method", DEFAULT_FUSION)),
            weight=settings.weight if settings.weight is not None else float(calibrated.get("weight", DEFAULT_WEIGHT)),
            depth=settings.depth,
            rerank=settings.rerank,
            rerank_depth=settings.rerank_depth,
            nprobe=settings.nprobe,
            ef_search=settings.ef_search,
        )

    @property
    def label(self) -> str:
        """``hybrid``, ``dense+rerank``: what reports and logs call this way of ranking."""
        return self.mode + ("+rerank" if self.rerank is not None else "")


def check_queries(queries: Sequence[str]) -> None:
    """Refuse an empty or whitespace-only query (it would return arbitrary hits) and one that is not
    valid Unicode text (it cannot be tokenized), naming the query by its position."""
    for i, query in enumerate(queries, start=1):
        problem = text_problem(query) if isinstance(query, str) else f"not a string ({type(query).__name__})"
        if problem is not None:
            which = "the query" if len(queries) == 1 else f"query {i}"
            raise EmbedtuneError(f"{which} is {problem}" if problem == "empty" else f"{which}: {problem}")


@dataclass(frozen=True)
class Hit:
    rank: int
    doc_id: str
    score: float
    text: str
    metadata: dict = field(default_factory=dict)

    def to_json(self, *, text: bool = True) -> dict[str, Any]:
        """The hit as ``embedtune search --json`` and the service return it (``text=False`` drops the text)."""
        out: dict[str, Any] = {"rank": self.rank, "id": self.doc_id, "score": round(self.score, 6)}
        return out | ({"text": self.text} if text else {}) | ({"metadata": self.metadata} if self.metadata else {})


class Searcher:
    """An index, the model that built it and (optionally) a cross-encoder, loaded once for any number of queries.

    ``model`` overrides where the model is loaded from (the index may have moved machines); it must
    still be byte-identical to the one that built the index, else it is refused. Queries are encoded
    in the index's precision unless ``precision`` says otherwise (vectors of one model agree closely
    across precisions, so an index built in fp32 may be searched in bf16); ``backend`` is what
    encodes them (:func:`~embedtune.encoding.make_encoder`). ``settings`` are the defaults of every
    search (default: the index's calibrated mode and fusion); the cross-encoder they name, or a loaded
    ``reranker``, is loaded once, here. A mode the index cannot serve is refused now, not at the first query.
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
        self.index = index
        manifest = index.manifest
        loaded = load_model(index.check_model(model), device=device, max_seq_length=manifest.max_seq_length)
        if loaded.get_embedding_dimension() != manifest.dimension:
            raise EmbedtuneError(
                f"model makes {loaded.get_embedding_dimension()}-dim vectors, index '{index.name}' holds "
                f"{manifest.dimension}-dim ones; rebuild the index with this model"
            )
        self.encoder = make_encoder(loaded, precision, backend=backend, fallback=manifest.precision)
        self.settings = settings or SearchSettings()
        if reranker is not None and self.settings.rerank is None:
            self.settings = replace(self.settings, rerank=reranker.path)
        self.reranker, self._device = reranker, device
        self._reranker_for(self.plan())

    @classmethod
    def open(
        cls,
        index: str | Path,
        *,
        indexes_dir: Path = DEFAULT_INDEXES_DIR,
        model: str | Path | None = None,
        **options: Any,
    ) -> Searcher:
        """Load ``index`` (a name under ``indexes_dir``, a path or a ``qdrant://`` URI) and its model;
        ``options`` go to the constructor."""
        loaded = Index.load(index, indexes_dir)
        try:
            return cls(loaded, model, **options)
        except BaseException:
            loaded.close()  # a refused model leaves no open store (a Qdrant local-mode folder stays locked)
            raise

    def with_index(self, index: Index) -> Searcher:
        """This searcher's loaded encoder over ``index`` (a newer generation of the same index, say),
        without loading the model again; refused unless ``index`` was built by the same model."""
        if index.manifest.model_fingerprint != self.index.manifest.model_fingerprint:
            raise EmbedtuneError(
                f"index '{index.name}' was built by another model (fingerprint "
                f"{index.manifest.model_fingerprint[:12]}, not {self.index.manifest.model_fingerprint[:12]})"
            )
        other = copy.copy(self)
        other.index = index
        other.plan()
        return other

    @property
    def mode(self) -> str:
        """The mode a search with this searcher's settings runs in."""
        return self.plan().mode

    def plan(self, settings: SearchSettings | SearchPlan | None = None) -> SearchPlan:
        """``settings`` (default: this searcher's) resolved against the index, once per request (a plan
        already resolved is taken as it is)."""
        if isinstance(settings, SearchPlan):
            return settings
        return SearchPlan.resolve(settings or self.settings, self.index)

    def search(
        self,
        queries: list[str],
        k: int = 10,
        *,
        settings: SearchSettings | SearchPlan | None = None,
        show_progress: bool = False,
    ) -> list[list[Hit]]:
        """The top-``k`` hits for each query, best first, as ``settings`` (default: this searcher's) say.

        With a cross-encoder, the first stage's top ``rerank_depth`` are reranked and the best ``k`` of
        them returned, scored by the cross-encoder. Warns (:class:`~embedtune.errors.EmbedtuneWarning`)
        when a query is longer than the model's token limit (it is truncated, as every encoder does)
        and when ``k`` exceeds the index size.
        """
        if not queries:
            return []
        plan = self.plan(settings)
        if plan.rerank is not None:
            check_depth(plan.rerank_depth, k)
        self.check(queries, k)
        return self.hits(*self.rank(queries, k, plan, progress=show_progress))

    def rank(
        self,
        queries: Sequence[str],
        k: int,
        plan: SearchPlan,
        *,
        vectors: np.ndarray | None = None,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, FAISS ids)`` of the top ``k`` per query (-1 pads): first stage, combination, rerank.

        ``vectors`` are the queries' vectors when the caller has them (calibration encodes once).
        With a cross-encoder, a ``k`` beyond ``rerank_depth`` continues below the reranked head with
        the first stage's order (:func:`~embedtune.retrieval.rerank.rerank_head`).
        """
        reranker = self._reranker_for(plan)
        fetch = max(k, plan.rerank_depth) if reranker is not None else k
        scores, fids = self.combine(
            self.first_stage(queries, fetch, plan, vectors=vectors, progress=progress), fetch, plan
        )
        if reranker is None:
            return scores, fids
        docs = self.index.lookup({int(f) for f in fids[:, : plan.rerank_depth].ravel() if f >= 0})
        return rerank_head(reranker, queries, fids, lambda f: docs[f].text, plan.rerank_depth, k)

    def first_stage(
        self,
        queries: Sequence[str],
        k: int,
        plan: SearchPlan,
        *,
        vectors: np.ndarray | None = None,
        progress: bool = False,
    ) -> list[Ranked]:
        """The lists the plan's mode combines: ``[dense]``, ``[bm25]`` or ``[dense, bm25]`` (each to depth
        ``max(plan.depth, k)`` in hybrid mode, else ``k``)."""
        depth = max(plan.depth, k) if plan.mode == "hybrid" else k
        runs = []
        if plan.mode in ("dense", "hybrid"):
            if vectors is None:
                vectors = self.encode_queries(queries, show_progress=progress)
            runs.append(self.index.search_vectors(vectors, depth, nprobe=plan.nprobe, ef_search=plan.ef_search))
        if plan.mode in ("bm25", "hybrid"):
            runs.append(self.index.lexical.search(list(queries), depth))
        return runs

    @staticmethod
    def combine(runs: Sequence[Ranked], k: int, plan: SearchPlan) -> Ranked:
        """The top ``k`` of the first stage's lists: the one list, or both fused as the plan says."""
        if plan.mode != "hybrid":
            scores, ids = runs[0]
            return scores[:, :k], ids[:, :k]
        return fuse(runs, k, plan.fusion, (plan.weight, 1 - plan.weight))

    def pair_scores(self, queries: Sequence[str], fids: np.ndarray, plan: SearchPlan) -> np.ndarray:
        """The score ``queries[i]`` and the document of FAISS id ``fids[i]`` have in the plan's ranking.

        Mining's false-negative margins read these: the cross-encoder's score when the plan reranks, the
        fused score in hybrid mode (a pair absent from a list gets that list's floor), else the cosine
        with the stored vector or the BM25 score.
        """
        fids = np.asarray(fids, dtype=np.int64)
        reranker = self._reranker_for(plan)
        if reranker is not None:
            docs = self.index.lookup({int(f) for f in fids})
            return reranker.score(list(queries), [docs[int(f)].text for f in fids])
        if plan.mode == "hybrid":
            runs = self.first_stage(queries, plan.depth, plan)
            return fused_scores(runs, fids[:, None], plan.fusion, (plan.weight, 1 - plan.weight))[:, 0].astype(
                np.float32
            )
        if plan.mode == "bm25":
            lexical = self.index.lexical
            terms = lexical.bm25.query_terms(list(queries))
            return lexical.bm25.pair_scores(terms, np.searchsorted(lexical.fids, fids))
        try:
            docs = np.stack([self.index.faiss_index.reconstruct(int(f)) for f in fids])
        except RuntimeError as e:
            raise EmbedtuneError(
                f"index '{self.index.name}' cannot return its vectors (its FAISS type does not keep them "
                "by id), so it cannot score given (query, document) pairs"
            ) from e
        vectors = self.encode_queries(list(queries))
        return np.einsum("ij,ij->i", vectors, docs.astype(np.float32, copy=False))

    def retriever(
        self,
        queries: Sequence[str],
        *,
        settings: SearchSettings | SearchPlan | None = None,
        doc_ids: Sequence[str] | None = None,
        show_progress: bool = True,
    ) -> IndexRetriever:
        """This searcher behind the :class:`~embedtune.retrieval.base.Retriever` contract, for ``eval`` and mining."""
        plan = self.plan(settings)
        return IndexRetriever(self, queries, plan, doc_ids=doc_ids, show_progress=show_progress)

    def check(self, queries: Sequence[str], k: int) -> None:
        """Refuse bad queries; warn of truncated ones and of a ``k`` beyond the index size."""
        check_queries(queries)
        self._warn_truncated(queries)
        if k > len(self.index):
            warnings.warn(
                f"k={k} is larger than index '{self.index.name}' ({len(self.index)} documents); "
                f"returning at most {len(self.index)} hits",
                EmbedtuneWarning,
                stacklevel=3,
            )

    def hits(self, scores: np.ndarray, fids: np.ndarray) -> list[list[Hit]]:
        """Ranked FAISS ids (-1 = none) as hits with the stored documents, per query."""
        docs = self.index.lookup({int(f) for f in fids.ravel() if f >= 0})
        return [
            [
                Hit(rank, docs[fid].doc_id, float(score), docs[fid].text, docs[fid].metadata)
                for rank, (score, fid) in enumerate(
                    ((s, int(f)) for s, f in zip(q_scores, q_fids, strict=True) if f >= 0), start=1
                )
            ]
            for q_scores, q_fids in zip(scores, fids, strict=True)
        ]

    def encode_queries(self, queries: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Query vectors as the index expects them: its model, precision and query prompt."""
        return self.encoder.encode(
            list(queries),
            show_progress=show_progress,
            prompt_name=self.index.manifest.query_prompt_name,
            desc=f"encoding queries (index:{self.index.name})",
        )

    def _reranker_for(self, plan: SearchPlan) -> Reranker | None:
        """The cross-encoder ``plan`` asks for (none: no reranking), loaded once and kept."""
        if plan.rerank is None:
            return None
        if self.reranker is None or Path(plan.rerank) != self.reranker.path:
            self.reranker = Reranker(plan.rerank, device=self._device)
        return self.reranker

    def _warn_truncated(self, queries: Sequence[str]) -> None:
        limit = self.index.manifest.max_seq_length
        lengths = [len(ids) for ids in self.encoder.model.tokenizer(list(queries), verbose=False)["input_ids"]]
        long = [(i, n) for i, n in enumerate(lengths, start=1) if n > limit]
        if long:
            i, n = long[0]
            which = f"query {i} is {n} tokens long" if len(long) == 1 else f"{len(long)} queries (e.g. query {i}: {n})"
            warnings.warn(
                f"{which}, over the model's limit of {limit} tokens (special tokens included): "
                f"truncated to the first {limit}",
                EmbedtuneWarning,
                stacklevel=3,
            )


class IndexRetriever:
    """A :class:`Searcher` answering in rows of a corpus (a :class:`~embedtune.retrieval.base.Retriever`).

    Rows are positions in ``doc_ids`` (default: the index's documents in FAISS-id order); an indexed
    document missing from them is never returned. FAISS ids become rows through the index's
    :meth:`~embedtune.index.Index.row_map`, with no per-hit lookups in the document store.
    """

    def __init__(
        self,
        searcher: Searcher,
        queries: Sequence[str],
        plan: SearchPlan,
        *,
        doc_ids: Sequence[str] | None = None,
        show_progress: bool = True,
    ) -> None:
        index = searcher.index
        self.searcher, self.plan, self.queries, self.show_progress = searcher, plan, list(queries), show_progress
        self.name = f"index:{index.name}"
        self.doc_ids = list(doc_ids) if doc_ids is not None else index.doc_ids
        self._row_map = index.row_map(self.doc_ids)
        self._fid_of_row = np.full(len(self.doc_ids), -1, dtype=np.int64)
        indexed = np.flatnonzero(self._row_map >= 0)
        self._fid_of_row[self._row_map[indexed]] = indexed

    @property
    def unindexed(self) -> list[str]:
        """The corpus documents the index does not hold (never returned, never scored)."""
        return [self.doc_ids[r] for r in np.flatnonzero(self._fid_of_row < 0)]

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        texts = [self.queries[r] for r in query_rows]
        scores, fids = self.searcher.rank(texts, k, self.plan, progress=self.show_progress)
        return scores, np.where(fids >= 0, self._row_map[np.maximum(fids, 0)], -1)

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        fids = self._fid_of_row[np.asarray(doc_rows)]
        if (fids < 0).any():
            raise EmbedtuneError(f"index '{self.searcher.index.name}' does not hold every document asked to be scored")
        return self.searcher.pair_scores([self.queries[r] for r in query_rows], fids, self.plan)
