"""Calibration of an index's search knob: recall against exact search, measured by score.

:func:`calibrate` picks the ``nprobe`` (IVF) or ``ef_search`` (HNSW) that a build stores as the
index's search default: the smallest value, plus a step of margin, whose recall@10 against exact
search reaches the target on corpus vectors used as queries. Recall is counted by score, not by id
(:func:`recall_at_k`), so tied duplicate documents are not misses, and found documents are scored
with their float vectors (:func:`exact_scores`), so quantised types are judged like exact ones.
``benchmarks/index_types.py`` re-measures recall on held-out queries
(``benchmarks/results/index_types.md``). :func:`calibrate_queries` and :class:`QueryRecall` do the
same with real query vectors (``index calibrate``: :mod:`embedtune.retrieval.calibration`), against
the vectors the index stores for its live documents, so removed (tombstoned) documents never count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedtune.index.types import IndexSpec, knob_name, knob_steps, search_parameters

CALIBRATION_QUERIES = 500
# Scores this close to the exact k-th best count as ties (duplicate documents); rare between distinct
# documents, as the synthetic benchmark corpus shows (benchmarks/results/index_types.md).
RECALL_EPSILON = 1e-5
EXACT_BLOCK = 65_536  # corpus rows scored at a time by the exact search


def exact_scores(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The exact inner products of each query with the float ``vectors`` at ``rows`` (-1 = no result).

    Scoring the found documents with their float vectors, not with the index's own (quantised)
    scores, is what makes the recall of every type comparable.
    """
    scores = np.einsum("qd,qkd->qk", queries, vectors[np.maximum(rows, 0)])
    return np.where(rows >= 0, scores, -np.inf)


def exact_search(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, rows) by inner product, over ``vectors`` a block of ``EXACT_BLOCK`` rows at a
    time: a memory-mapped matrix (a merge of shards) is never copied whole into memory."""
    import faiss

    scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    rows = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), EXACT_BLOCK):
        block = np.ascontiguousarray(vectors[start : start + EXACT_BLOCK], dtype=np.float32)
        s, r = faiss.knn(queries, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        scores, rows = np.hstack([scores, s]), np.hstack([rows, r + start])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
    return scores, rows


def recall_at_k(found_scores: np.ndarray, kth_scores: np.ndarray, epsilon: float = RECALL_EPSILON) -> float:
    """Mean fraction of the ``k = found_scores.shape[1]`` results that score at least the exact k-th best.

    Recall by score, not by id (as ann-benchmarks computes it): corpora hold duplicate documents whose
    vectors tie, and any one of tied documents is as right as another. Counting ids made a sizeable
    share of the Debian test queries look like misses for returning a different copy of a tied document.
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
    n, k = len(vectors), 10
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(CALIBRATION_QUERIES, n), replace=False))
    queries = np.ascontiguousarray(vectors[rows])
    k1 = min(k + 1, n)
    kept = k1 - 1  # results per query once its own document is left out
    truth_scores, truth_rows = exact_search(queries, vectors, k1)
    own_in_top = (truth_rows[:, :kept] == rows[:, None]).any(axis=1)
    kth = np.where(own_in_top, truth_scores[:, kept], truth_scores[:, max(kept - 1, 0)])
    name = knob_name(spec.kind)
    by_id = np.argsort(ids, kind="stable")  # FAISS ids -> rows of ``vectors``, sorted once for every knob

    def recall_with(value: int) -> float:
        params = search_parameters(spec.kind, {name: value} if name else {})
        found = index.search(queries, k1, params=params)[1]
        found = np.where(found >= 0, by_id[np.searchsorted(ids, found, sorter=by_id).clip(0, n - 1)], -1)
        return recall_at_k(exact_scores(queries, vectors, _drop_self(found, rows, kept)), kth)

    return _choose_knob(spec, recall_with, target, len(rows))


def _choose_knob(spec: IndexSpec, recall_with, target: float, queries: int) -> Calibration:
    """One step above the smallest knob value whose recall reaches ``target`` (the best value if none does)."""
    name = knob_name(spec.kind)
    steps = knob_steps(spec) or [0]
    best, best_recall = steps[-1], -1.0
    for i, value in enumerate(steps):
        recall = recall_with(value)
        gain = recall - best_recall
        if gain > 1e-9:
            best, best_recall = value, recall
        if recall >= target:
            if i + 1 < len(steps):
                # One step more than the sample needs: a corpus vector is an easy query (in HNSW its own
                # node links straight to its neighbours); held-out queries lost recall at the bare minimum
                # (benchmarks/results/index_types.md).
                best = steps[i + 1]
                best_recall = max(best_recall, recall_with(best))
            break
        if spec.kind == "ivf-pq" and value >= 8 and gain < 0.002:
            break  # quantisation error, not the cells scanned, limits PQ's recall: scanning more buys nothing
    knobs = {name: best} if name else {}
    return Calibration(knobs, round(best_recall, 4), queries, target, best_recall >= target)


class QueryRecall:
    """recall@``k`` of a loaded :class:`~embedtune.index.Index` for real query vectors, against exact search
    over its live documents' stored vectors (tombstones excluded on both sides), for any search knobs."""

    def __init__(self, index, queries: np.ndarray, k: int = 10) -> None:
        self.index, self.queries = index, queries
        self.fids = np.fromiter((f for f, _ in index.store.iter_ids()), dtype=np.int64)
        self.vectors = stored_vectors(index, self.fids)
        self.k = min(k, len(self.fids))
        self.kth = _exact_kth(self.vectors, queries, self.k)

    def __call__(self, knobs: dict[str, int]) -> float:
        found = self.index.search_vectors(self.queries, self.k, **knobs)[1]
        return recall_at_k(exact_scores(self.queries, self.vectors, _rows_of(found, self.fids)), self.kth)


def calibrate_queries(index, queries: np.ndarray, target: float) -> Calibration:
    """The search knob calibrated, as :func:`calibrate` does, on real query vectors rather than corpus vectors."""
    spec = index.manifest.spec
    name = knob_name(spec.kind)
    recall = QueryRecall(index, queries)
    return _choose_knob(spec, lambda value: recall({name: value} if name else {}), target, len(queries))


def stored_vectors(index, fids: np.ndarray) -> np.ndarray:
    """The vectors the index stores for ``fids`` (decoded where its type compresses them)."""
    from embedtune.errors import EmbedtuneError

    faiss_index = index.faiss_index
    try:
        if hasattr(faiss_index, "make_direct_map") and not faiss_index.direct_map.type:
            import faiss

            faiss_index.set_direct_map_type(faiss.DirectMap.Hashtable)  # IVF: reconstruct by id
        return np.stack([faiss_index.reconstruct(int(f)) for f in fids]).astype(np.float32, copy=False)
    except RuntimeError as e:
        raise EmbedtuneError(
            f"index '{index.name}' cannot return its vectors by id, so its search knob cannot be calibrated on queries"
        ) from e


def _exact_kth(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    return exact.search(queries, k)[0][:, k - 1]


def _rows_of(found: np.ndarray, fids: np.ndarray) -> np.ndarray:
    """FAISS ids -> rows of ``fids`` (sorted, as the store streams them); -1 stays -1."""
    rows = np.searchsorted(fids, found).clip(0, len(fids) - 1)
    return np.where((found >= 0) & (fids[rows] == found), rows, -1)


def _drop_self(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` results of each row of ``found`` other than that row's ``own`` entry."""
    out = np.full((len(found), k), -1, dtype=np.int64)
    for i, (row, mine) in enumerate(zip(found, own, strict=True)):
        kept = row[row != mine][:k]
        out[i, : len(kept)] = kept
    return out
