"""Fusion of ranked lists: reciprocal-rank fusion and normalised convex combination (min-max, z-score).

Each input list is one retriever's top-k' for a batch of queries, as ``(scores, ids)`` arrays of shape
``(queries, k')`` with ``-1`` ids as padding (the :class:`~embedtune.retrieval.base.Retriever` and
FAISS convention), so the same code fuses corpus rows (evaluation, mining) and FAISS ids (search).

Scores of different retrievers live on different scales (cosines, raw BM25), so a convex combination
first normalises each list per query: min-max to [0, 1], or z-score. A document absent from a list
gets that list's lowest normalised score for the query (it ranked below everything the list kept),
never a neutral 0 that a z-score would put above half the list. Reciprocal-rank fusion ignores scores
and adds ``weight / (RRF_K + rank)``. The fused score of any (query, document) pair is defined the
same way (:func:`fused_scores`), so a pair that a fused ranking returns scores what the ranking said.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedtune.errors import EmbedtuneError

FUSIONS = ("minmax", "zscore", "rrf")
RRF_K = 60  # the constant of Cormack et al. (2009), used by every RRF implementation we know
_CELLS = 1 << 23  # candidate x list comparisons held at once

Ranked = tuple[np.ndarray, np.ndarray]  # (scores, ids), each (queries, depth), best first, -1 = no result


def _normalised(scores: np.ndarray, ids: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-query normalised scores of one list, and the score a document missing from it gets."""
    valid = ids >= 0
    if method == "rrf":
        ranks = np.arange(1, ids.shape[1] + 1, dtype=np.float64)
        return np.broadcast_to(1.0 / (RRF_K + ranks), ids.shape), np.zeros(len(ids))
    s = scores.astype(np.float64)
    count = np.maximum(valid.sum(axis=1), 1)
    if method == "minmax":
        low = np.where(valid, s, np.inf).min(axis=1, initial=np.inf)
        high = np.where(valid, s, -np.inf).max(axis=1, initial=-np.inf)
        spread = high - low
        flat = ~(spread > 0)  # one distinct score (or none): every kept document is top
        norm = np.where(
            flat[:, None], 1.0, (s - np.where(flat, 0.0, low)[:, None]) / np.where(flat, 1.0, spread)[:, None]
        )
    else:
        mean = np.where(valid, s, 0.0).sum(axis=1) / count
        std = np.sqrt(np.where(valid, (s - mean[:, None]) ** 2, 0.0).sum(axis=1) / count)
        norm = (s - mean[:, None]) / np.where(std > 0, std, 1.0)[:, None]
    norm = np.where(valid, norm, np.inf)
    missing = np.where(valid.any(axis=1), norm.min(axis=1, initial=np.inf), 0.0)  # a list of width 0: no hits
    return np.where(valid, norm, 0.0), missing


def check_fusion(method: str, weights: Sequence[float], lists: int) -> None:
    """A known method and one non-negative weight per list, not all zero."""
    if method not in FUSIONS:
        raise EmbedtuneError(f"unknown fusion '{method}' (known: {', '.join(FUSIONS)})")
    if len(weights) != lists or any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise EmbedtuneError(f"fusion needs one non-negative weight per list, not all zero; got {list(weights)}")


def fused_scores(runs: Sequence[Ranked], candidates: np.ndarray, method: str, weights: Sequence[float]) -> np.ndarray:
    """The fused score of each candidate id (``(queries, m)``; -1 gives -inf) against the lists ``runs``."""
    return _fused(runs, candidates, method, weights)[0]


def _fused(
    runs: Sequence[Ranked], candidates: np.ndarray, method: str, weights: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Fused scores, and the weight of the lists that really hold each candidate (to break ties in its favour
    over a document that only gets a list's floor)."""
    check_fusion(method, weights, len(runs))
    out = np.zeros(candidates.shape, dtype=np.float64)
    held = np.zeros(candidates.shape, dtype=np.float64)
    for (scores, ids), weight in zip(runs, weights, strict=True):
        if weight == 0:
            continue
        norm, missing = _normalised(np.asarray(scores), np.asarray(ids), method)
        step = max(1, _CELLS // max(1, candidates.shape[1] * ids.shape[1]))
        for s in range(0, len(candidates), step):
            cand, found_ids = candidates[s : s + step], ids[s : s + step]
            match = (cand[:, :, None] == found_ids[:, None, :]) & (found_ids[:, None, :] >= 0)
            found = match.any(axis=2)
            value = np.take_along_axis(norm[s : s + step], match.argmax(axis=2), axis=1)
            out[s : s + step] += weight * np.where(found, value, missing[s : s + step, None])
            held[s : s + step] += weight * found
    return np.where(candidates >= 0, out, -np.inf), held


def fuse(runs: Sequence[Ranked], k: int, method: str, weights: Sequence[float]) -> Ranked:
    """The top-``k`` of the union of ``runs`` by fused score: ``(scores, ids)``, best first, -1 padded."""
    if k <= 0:
        raise EmbedtuneError(f"k must be positive, got {k}")
    candidates = np.concatenate([np.asarray(ids, dtype=np.int64) for _, ids in runs], axis=1)
    # A document in several lists is one candidate: later copies become padding.
    order = np.argsort(candidates, axis=1, kind="stable")
    ordered = np.take_along_axis(candidates, order, axis=1)
    repeat = np.zeros_like(ordered, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    dup = np.zeros_like(repeat)
    np.put_along_axis(dup, order, repeat, axis=1)
    candidates = np.where(dup, -1, candidates)
    scores, held = _fused(runs, candidates, method, weights)
    top = np.lexsort((-held, -scores), axis=1)[:, :k]  # by score, ties to the document more lists hold
    top_scores = np.take_along_axis(scores, top, axis=1)
    top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(candidates, top, axis=1), -1)
    return np.where(np.isfinite(top_scores), top_scores, 0.0).astype(np.float32), top_ids
