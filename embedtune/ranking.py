"""The one exact top-k: best-first rows of a score matrix, or of a dense corpus by inner product.

Every exact ranking goes through here: the dense retriever (mining, evaluation of a model, the Python
API), training's dev evaluation, calibration's exact neighbours and BM25's top-k over its score
matrix. One implementation means one tie rule and one way of computing a score, so two stages that
rank the same vectors get the same ids, order and scores, and a faster path reaches all of them.

Results are best first, and equal scores are ordered by row, lower first (:func:`top_k`): a ranking
does not depend on the block it was computed in, the thread count or ``torch.topk``'s choice among ties.

:class:`ExactTopK` searches a dense corpus: candidates from one matrix product per block of queries
(in bf16 where the caller says the hardware runs it natively: on AMX / bf16 GPUs several times faster
than FAISS's fp32 brute force, see ``benchmarks/results/mining_scale.md``), over-fetching
:data:`RESCORE_EXTRA` candidates that are then rescored in fp32, one dot product each, and ranked by
:func:`top_k`. So the returned scores are exact fp32 whatever the scan precision and however BLAS
blocked the product, and only a document whose bf16 score error exceeds its gap to the k-th candidate
can be missed. (Where more than ``RESCORE_EXTRA`` documents tie at the cut, duplicates of one text,
the scan picks which of them are candidates; those kept are still ordered by row.) Memory is bounded
whatever the numbers of queries and documents, and a memory-mapped corpus (a merge of shards) is read
a block of rows at a time, never copied whole.

The scan precision is the caller's to choose (``fp32`` or ``bf16``): whether the CPU has bf16
arithmetic is known to :mod:`embedtune.encoding`, a later stage than this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from embedtune.errors import EmbedtuneError

if TYPE_CHECKING:
    import torch

SCAN_PRECISIONS = ("fp32", "bf16")
RESCORE_EXTRA = 16  # candidates fetched beyond k by the scan, then rescored in fp32
MAPPED_BLOCK = 65_536  # rows of a memory-mapped corpus scanned at a time
_SCAN_CELLS = 1 << 26  # query x document scores held at once by the scan (128 MiB in bf16, 256 in fp32)
_RESCORE_CELLS = 1 << 22  # gathered vector values held at once while rescoring in fp32 (16 MiB)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, columns)`` of the ``k`` best entries of each row of ``scores``, best first, equal scores by
    column (lower first); ``k`` is capped at the number of columns. For a score matrix already computed
    (BM25's), and the last step of :class:`ExactTopK`.

    A tie that straddles the cut keeps its lowest columns, so the result is the first ``k`` of the
    row's full ranking, not an arbitrary pick among the tied entries.
    """
    n_rows, n_cols = scores.shape
    k = min(_checked(k), n_cols)
    if k == 0:
        return np.zeros((n_rows, 0), dtype=scores.dtype), np.zeros((n_rows, 0), dtype=np.int64)
    if k < n_cols:
        kth = np.partition(scores, n_cols - k, axis=1)[:, n_cols - k, None]  # each row's k-th best score
        above, tied = scores > kth, scores == kth
        room = k - above.sum(axis=1)
        keep = above | tied
        split = np.flatnonzero(tied.sum(axis=1) > room)  # rows whose cut falls inside a group of ties
        if len(split):
            first = np.cumsum(tied[split], axis=1, dtype=np.int32) <= room[split, None]
            keep[split] = above[split] | (tied[split] & first)
        if keep.sum() != n_rows * k:
            raise EmbedtuneError("scores that are not numbers (NaN) cannot be ranked")
        columns = np.nonzero(keep)[1].reshape(n_rows, k)  # ascending within each row
    else:
        columns = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    kept = np.take_along_axis(scores, columns, axis=1)
    order = np.argsort(-kept, axis=1, kind="stable")
    return np.take_along_axis(kept, order, axis=1), np.take_along_axis(columns, order, axis=1)


def row_scores(queries: np.ndarray, documents: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The fp32 inner product of query ``i`` with each document at ``rows[i]`` (-1: no result, scored -inf).

    One dot product per pair, a bounded block of queries at a time: the exact score of a candidate
    (:class:`ExactTopK`) or of an approximate search's result (calibration), the same whatever found it.
    ``documents`` may be memory-mapped: only the rows asked for are read.
    """
    queries = np.asarray(queries, dtype=np.float32)
    scores = np.empty(rows.shape, dtype=np.float32)
    step = max(1, _RESCORE_CELLS // max(1, rows.shape[1] * queries.shape[1]))
    for s in range(0, len(rows), step):
        block = rows[s : s + step]
        vectors = np.asarray(documents[np.maximum(block, 0)], dtype=np.float32)
        scores[s : s + step] = np.einsum("qd,qkd->qk", queries[s : s + step], vectors)
    return np.where(rows >= 0, scores, -np.inf).astype(np.float32, copy=False)


class ExactTopK:
    """Exact top-k by inner product over ``documents`` (``(n, dim)``, in memory or memory-mapped).

    ``precision``: the scan's, ``"fp32"`` or ``"bf16"`` (see the module docstring); scores are fp32
    either way. A corpus in memory is converted for the scan once (no copy in fp32), so many searches
    of it pay nothing more; a memory-mapped one is read :data:`MAPPED_BLOCK` rows at a time per search.
    """

    def __init__(self, documents: np.ndarray, precision: str = "fp32") -> None:
        if precision not in SCAN_PRECISIONS:
            raise EmbedtuneError(f"precision must be one of {', '.join(SCAN_PRECISIONS)}, got '{precision}'")
        self.documents, self.precision = documents, precision
        self._held = None if isinstance(documents, np.memmap) else self._scan_matrix(documents)

    def __len__(self) -> int:
        return len(self.documents)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of each query's ``min(k, n)`` best documents, best first, equal scores by row."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(_checked(k), len(self))
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), k), dtype=np.float32), np.zeros((len(queries), k), dtype=np.int64)
        candidates = np.sort(self._candidates(queries, min(len(self), k + RESCORE_EXTRA)), axis=1)
        scores, at = top_k(row_scores(queries, self.documents, candidates), k)  # sorted rows: ties by row
        return scores, np.take_along_axis(candidates, at, axis=1)

    def _candidates(self, queries: np.ndarray, fetch: int) -> np.ndarray:
        """The ``fetch`` best rows of each query by the scan's scores, merged over the corpus's blocks."""
        import torch

        scan = torch.from_numpy(queries).to(self._dtype())
        best: tuple[torch.Tensor, torch.Tensor] | None = None
        with torch.inference_mode():
            for start, block in self._blocks():
                step, depth = max(1, _SCAN_CELLS // len(block)), min(fetch, len(block))
                found = [torch.topk(scan[s : s + step] @ block.T, depth, dim=1) for s in range(0, len(scan), step)]
                scores = torch.cat([f.values for f in found]).float()
                rows = torch.cat([f.indices for f in found]) + start
                if best is not None:
                    scores, rows = torch.cat([best[0], scores], dim=1), torch.cat([best[1], rows], dim=1)
                    keep = torch.topk(scores, fetch, dim=1).indices
                    scores, rows = scores.gather(1, keep), rows.gather(1, keep)
                best = scores, rows
        return best[1].numpy()

    def _blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first row, scan matrix)`` of the corpus: the held one, or a memory-mapped corpus block by block."""
        if self._held is not None:
            yield 0, self._held
            return
        for start in range(0, len(self), MAPPED_BLOCK):
            yield start, self._scan_matrix(np.array(self.documents[start : start + MAPPED_BLOCK], dtype=np.float32))

    def _scan_matrix(self, documents: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(documents, dtype=np.float32)).to(self._dtype())

    def _dtype(self) -> torch.dtype:
        import torch

        return torch.bfloat16 if self.precision == "bf16" else torch.float32


def _checked(k: int) -> int:
    if k < 0:
        raise EmbedtuneError(f"k must be at least 0, got {k}")
    return k
