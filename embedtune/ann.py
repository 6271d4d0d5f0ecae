"""FAISS index types: how each is made, trained, sized, chosen and tuned.

Every type searches inner product over L2-normalised vectors (= cosine) and stores 64-bit ids (the
document store's row ids), so results can be looked up and documents removed by id:

==========  ================================================================  ==================
type        what                                                              bytes per vector
==========  ================================================================  ==================
flat        exact search                                                      4·d
sq8         exact scan of int8 scalar-quantised vectors (4x smaller)          d
hnsw        graph search (M links per node) over float vectors                4·d + ~8·M
ivf-flat    k-means cells, ``nprobe`` of ``nlist`` cells scanned              4·d + 8
ivf-sq8     the same over int8 vectors                                        d + 8
ivf-pq      the same over product-quantised codes (4-bit fast scan)           pq_m / 2 + 8
==========  ================================================================  ==================

Binary (1-bit) codes are not offered: on 384-dimension sentence embeddings they lose too much recall
to be useful without re-scoring by float vectors, which is what they were meant to avoid storing.

The search-time knobs (``nprobe`` for IVF types, ``ef_search`` for HNSW) are calibrated at build time
(:func:`calibrate`): the smallest value whose recall@10 against exact search on a sample of the
corpus reaches the target (0.99 = within 1% of exact search).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from embedtune.errors import EmbedtuneError

INDEX_TYPES: tuple[str, ...] = ("flat", "sq8", "hnsw", "ivf-flat", "ivf-sq8", "ivf-pq")
IVF_TYPES = ("ivf-flat", "ivf-sq8", "ivf-pq")
EXACT_MAX_VECTORS = 100_000  # below this, auto picks exact search: a query scans it in a few ms
MIN_POINTS_PER_CELL = 39  # FAISS's k-means warns below 39 training points per centroid
TRAIN_POINTS_PER_CELL = 64
DEFAULT_TARGET_RECALL = 0.99
CALIBRATION_QUERIES = 500
# Scores this close to the exact k-th best count as ties (duplicate documents); rare between distinct
# documents (0.2% of queries at 1M synthetic vectors have their 10th and 11th best this close).
RECALL_EPSILON = 1e-5
EF_SEARCH_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True)
class IndexSpec:
    """One index type and its build parameters (``None`` = not used by this type)."""

    kind: str
    nlist: int | None = None  # IVF: number of k-means cells
    pq_m: int | None = None  # IVF-PQ: sub-quantisers (4 bits each)
    hnsw_m: int | None = None  # HNSW: links per node
    ef_construction: int | None = None  # HNSW: candidate list while building

    def factory_string(self, dimension: int) -> str:
        """The ``faiss.index_factory`` description; flat and graph indexes get an id map."""
        return {
            "flat": "IDMap2,Flat",
            "sq8": "IDMap2,SQ8",
            "hnsw": f"IDMap2,HNSW{self.hnsw_m},Flat",
            "ivf-flat": f"IVF{self.nlist},Flat",
            "ivf-sq8": f"IVF{self.nlist},SQ8",
            "ivf-pq": f"IVF{self.nlist},PQ{self.pq_m}x4fs",
        }[self.kind]

    @property
    def supports_removal(self) -> bool:
        """HNSW graphs cannot drop nodes: removed documents are filtered out at search time instead."""
        return self.kind != "hnsw"

    @property
    def needs_training(self) -> bool:
        return self.kind in IVF_TYPES or self.kind == "sq8"

    def params(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "kind" and v is not None}

    def bytes_per_vector(self, dimension: int) -> float:
        """Approximate resident memory per vector, for the automatic choice and ``index info``."""
        return {
            "flat": 4 * dimension + 8,
            "sq8": dimension + 8,
            "hnsw": 4 * dimension + 8 + 2 * 4 * (self.hnsw_m or 32) * 1.05,
            "ivf-flat": 4 * dimension + 8,
            "ivf-sq8": dimension + 8,
            "ivf-pq": (self.pq_m or dimension // 4) / 2 + 8,
        }[self.kind]


def default_nlist(n: int) -> int:
    """About 4·sqrt(n) cells (FAISS's guideline), but never fewer than 39 training points per cell."""
    return max(1, min(int(4 * math.sqrt(n)), n // MIN_POINTS_PER_CELL))


def default_pq_m(dimension: int) -> int:
    """4 dimensions per 4-bit sub-quantiser (d/4 codes of half a byte: 8x smaller than float32)."""
    for m in range(max(1, dimension // 4), 0, -1):
        if dimension % m == 0:
            return m
    return 1


def make_spec(kind: str, n: int, dimension: int, **overrides: int | None) -> IndexSpec:
    """``kind`` with defaults sized for ``n`` vectors, overridden by any non-``None`` parameter."""
    if kind not in INDEX_TYPES:
        raise EmbedtuneError(f"unknown index type '{kind}' (choose from auto, {', '.join(INDEX_TYPES)})")
    defaults: dict[str, int] = {}
    if kind in IVF_TYPES:
        defaults["nlist"] = default_nlist(n)
    if kind == "ivf-pq":
        defaults["pq_m"] = default_pq_m(dimension)
    if kind == "hnsw":
        defaults |= {"hnsw_m": 32, "ef_construction": 64}
    unknown = [k for k, v in overrides.items() if v is not None and k not in defaults]
    if unknown:
        raise EmbedtuneError(f"index type '{kind}' has no parameter {', '.join(unknown)}")
    spec = IndexSpec(kind, **(defaults | {k: v for k, v in overrides.items() if v is not None}))
    _check_spec(spec, n, dimension)
    return spec


def _check_spec(spec: IndexSpec, n: int, dimension: int) -> None:
    """Turn what FAISS would assert on (or silently degrade with) into a clear error."""
    if spec.kind in IVF_TYPES and not 1 <= spec.nlist <= n:
        raise EmbedtuneError(f"{spec.kind} with nlist={spec.nlist} needs at least that many documents, got {n}")
    if spec.kind == "ivf-pq":
        if dimension % spec.pq_m:
            raise EmbedtuneError(f"pq_m={spec.pq_m} must divide the dimension {dimension}")
        if n < 16:
            raise EmbedtuneError(f"ivf-pq needs at least 16 documents to train its 4-bit codebooks, got {n}")
    for name, value in spec.params().items():
        if value < 1:
            raise EmbedtuneError(f"{name} must be positive, got {value}")


def choose_spec(n: int, dimension: int, memory_budget: int) -> tuple[IndexSpec, str]:
    """Pick a type for ``n`` vectors within ``memory_budget`` bytes, and say why."""
    mb = n * 4 * dimension / 1e6
    size = f"{n:,} vectors x {dimension} dims = {mb:,.0f} MB as float32, memory budget {memory_budget / 1e9:.1f} GB"
    if n <= EXACT_MAX_VECTORS and n * 4 * dimension * 1.1 <= memory_budget:
        return make_spec("flat", n, dimension), (
            f"{size}; up to {EXACT_MAX_VECTORS:,} vectors exact search answers a query in a few ms, so flat (exact)"
        )
    for kind, why in (
        (
            "ivf-flat",
            "float vectors fit in memory: IVF-flat, whose nprobe can always be calibrated to the target recall "
            "(HNSW at 1M benchmark vectors could not reach 0.99) and which deletes removed documents outright",
        ),
        ("ivf-sq8", "float vectors do not fit, int8 vectors do: IVF over 4x smaller scalar-quantised vectors"),
    ):
        spec = make_spec(kind, n, dimension)
        if n * spec.bytes_per_vector(dimension) * 1.1 <= memory_budget:
            return spec, f"{size}; {why}"
    why = "only compressed codes fit: IVF over 4-bit product-quantised codes (recall is lower)"
    return make_spec("ivf-pq", n, dimension), f"{size}; {why}"


def create_index(spec: IndexSpec, dimension: int):
    import faiss

    index = faiss.index_factory(dimension, spec.factory_string(dimension), faiss.METRIC_INNER_PRODUCT)
    if spec.kind == "hnsw":
        hnsw_of(index).hnsw.efConstruction = spec.ef_construction
    return index


def hnsw_of(index):
    """The HNSW index inside its id map."""
    import faiss

    return faiss.downcast_index(faiss.downcast_index(index).index)


def training_sample(vectors: np.ndarray, spec: IndexSpec, seed: int = 0, size: int | None = None) -> np.ndarray:
    """A seeded random sample for k-means / quantiser training (64 points per IVF cell by default)."""
    n = len(vectors)
    size = size or (TRAIN_POINTS_PER_CELL * spec.nlist if spec.kind in IVF_TYPES else 50_000)
    if size >= n:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(vectors[rows])


def search_parameters(spec_kind: str, knobs: dict[str, int], selector=None):
    """FAISS per-query parameters for ``knobs`` (``nprobe`` / ``ef_search``) and an optional id filter."""
    import faiss

    if spec_kind in IVF_TYPES:
        return faiss.SearchParametersIVF(nprobe=int(knobs["nprobe"]), sel=selector)
    if spec_kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=int(knobs["ef_search"]), sel=selector)
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def knob_name(kind: str) -> str | None:
    return "nprobe" if kind in IVF_TYPES else "ef_search" if kind == "hnsw" else None


def knob_steps(spec: IndexSpec) -> list[int]:
    """Candidate values of the type's search knob, smallest (fastest) first."""
    if spec.kind in IVF_TYPES:
        steps = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
        return [s for s in steps if s < spec.nlist] + [spec.nlist]
    return list(EF_SEARCH_STEPS) if spec.kind == "hnsw" else []


def exact_scores(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The exact inner products of each query with the float ``vectors`` at ``rows`` (-1 = no result).

    Scoring the found documents with their float vectors, not with the index's own (quantised)
    scores, is what makes the recall of every type comparable.
    """
    scores = np.einsum("qd,qkd->qk", queries, vectors[np.maximum(rows, 0)])
    return np.where(rows >= 0, scores, -np.inf)


def recall_at_k(found_scores: np.ndarray, kth_scores: np.ndarray, epsilon: float = RECALL_EPSILON) -> float:
    """Mean fraction of the ``k = found_scores.shape[1]`` results that score at least the exact k-th best.

    Recall by score, not by id (as ann-benchmarks computes it): corpora hold duplicate documents whose
    vectors tie, and any one of tied documents is as right as another. Counting ids made 14% of the
    Debian test queries look like misses for returning a different copy of a tied document.
    """
    k = found_scores.shape[1]
    if k == 0:  # a one-document index: nothing to find besides the query itself
        return 1.0
    hits = (found_scores >= kth_scores[:, None] - epsilon).sum(axis=1)
    return float(np.minimum(hits, k).mean() / k)


@dataclass(frozen=True)
class Calibration:
    knobs: dict[str, int]
    recall_at_10: float
    queries: int
    target: float
    reached: bool


def calibrate(index, spec: IndexSpec, vectors: np.ndarray, ids: np.ndarray, target: float, seed: int = 0):
    """The knob value one step above the smallest with recall@10 >= ``target`` against exact search,
    on corpus vectors as queries.

    Each sampled document is a query whose own id is left out of both result lists, so the test is
    about finding its true neighbours. Real queries sit farther from the documents than this, so the
    benchmarks re-measure recall on held-out queries.
    """
    import faiss

    n, k = len(vectors), 10
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(CALIBRATION_QUERIES, n), replace=False))
    queries = np.ascontiguousarray(vectors[rows])
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    k1 = min(k + 1, n)
    kept = k1 - 1  # results per query once its own document is left out
    truth_scores, truth_rows = exact.search(queries, k1)
    own_in_top = (truth_rows[:, :kept] == rows[:, None]).any(axis=1)
    kth = np.where(own_in_top, truth_scores[:, kept], truth_scores[:, max(kept - 1, 0)])
    name = knob_name(spec.kind)
    steps = knob_steps(spec) or [0]
    by_id = np.argsort(ids, kind="stable")  # FAISS ids -> rows of ``vectors``, sorted once for every knob

    def recall_with(value: int) -> float:
        params = search_parameters(spec.kind, {name: value} if name else {})
        found = index.search(queries, k1, params=params)[1]
        found = np.where(found >= 0, by_id[np.searchsorted(ids, found, sorter=by_id).clip(0, n - 1)], -1)
        return recall_at_k(exact_scores(queries, vectors, _drop_self(found, rows, kept)), kth)

    best, best_recall = steps[-1], -1.0
    for i, value in enumerate(steps):
        recall = recall_with(value)
        gain = recall - best_recall
        if gain > 1e-9:
            best, best_recall = value, recall
        if recall >= target:
            if i + 1 < len(steps):
                # One step more than the sample needs: a corpus vector is an easy query (in HNSW its own
                # node links straight to its neighbours); held-out queries lost up to 0.8% recall there.
                best = steps[i + 1]
                best_recall = max(best_recall, recall_with(best))
            break
        if spec.kind == "ivf-pq" and value >= 8 and gain < 0.002:
            break  # quantisation error, not the cells scanned, limits PQ's recall: scanning more buys nothing
    knobs = {name: best} if name else {}
    return Calibration(knobs, round(best_recall, 4), len(rows), target, best_recall >= target)


def _drop_self(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` results of each row of ``found`` other than that row's ``own`` entry."""
    out = np.full((len(found), k), -1, dtype=np.int64)
    for i, (row, mine) in enumerate(zip(found, own, strict=True)):
        kept = row[row != mine][:k]
        out[i, : len(kept)] = kept
    return out
