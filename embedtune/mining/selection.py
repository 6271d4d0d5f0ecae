"""Choosing negatives: a retriever's ranking in, per (query, positive) pair the surviving candidates out.

Candidates are the documents at ranks ``min_rank..max_rank`` (1-based, in the retriever's ranking
of the whole corpus, positives included). Rules are applied in :data:`FILTER_RULES` order and each
removed candidate is counted under the first rule that removes it; then later copies of a text
already taken in the row go (``repeated_text``). A row for which fewer than ``num_negatives``
candidates survive is dropped (training needs the same number of columns in every row), counted,
and warned about; if most rows would be dropped, mining stops with an error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.mining.config import MiningConfig, MiningInput
from embedtune.mining.report import MiningReport, histograms
from embedtune.retrieval import Retriever

FILTER_RULES = ("known_positive", "positive_duplicate", "max_score", "absolute_margin", "relative_margin")
REPEATED_TEXT = "repeated_text"  # a second copy of a text already taken earlier in the same row


def normalise_text(text: str) -> str:
    """Case- and whitespace-insensitive form used to spot copies of a positive."""
    return " ".join(text.casefold().split())


@dataclass
class MinedRows:
    """Mined rows by position: pair index, negative corpus rows and scores (positive first)."""

    pairs: np.ndarray  # (rows,) index into MiningInput pairs
    negatives: np.ndarray  # (rows, n) corpus rows
    scores: np.ndarray  # (rows, n + 1): the positive's score, then each negative's


def _canonical_rows(texts: Sequence[str]) -> np.ndarray:
    """For each document, the first row whose normalised text equals its own."""
    first: dict[str, int] = {}
    return np.fromiter((first.setdefault(normalise_text(t), i) for i, t in enumerate(texts)), np.int64, len(texts))


def mine(
    data: MiningInput, retriever: Retriever, config: MiningConfig, *, show_progress: bool = True
) -> tuple[MinedRows, MiningReport]:
    """Select negatives for every pair of ``data``; see the module docstring for the rules."""
    from tqdm.auto import tqdm

    config.validate()
    started = time.perf_counter()
    report = _new_report(data, retriever.name, config)
    selector = _Selector(data, config, report)
    with tqdm(total=len(selector.query_rows), desc="Mining", unit="query", disable=not show_progress) as progress:
        for start in range(0, len(selector.query_rows), config.chunk_size):
            chunk = selector.query_rows[start : start + config.chunk_size]
            selector.add(chunk, *retriever.search(chunk, report.window[1]), retriever)
            progress.update(len(chunk))
    mined = selector.result()
    report.seconds["mine"] = round(time.perf_counter() - started, 2)
    _check_short_rows(report, config.num_negatives)
    return mined, report


def _new_report(data: MiningInput, retriever: str, config: MiningConfig) -> MiningReport:
    """An empty report with the rank window cut to the corpus (warned about; an error if it can no longer hold
    the negatives)."""
    n_docs = len(data.doc_ids)
    if config.min_rank > n_docs:
        raise EmbedtuneError(f"min_rank {config.min_rank} is beyond the corpus of {n_docs} documents")
    k = min(config.max_rank, n_docs)
    report = MiningReport(
        retriever=retriever,
        config=asdict(config),
        documents=n_docs,
        queries=len(data.query_ids),
        pairs=len(data.pair_query),
        window=[config.min_rank, k],
        filtered=dict.fromkeys((*FILTER_RULES, REPEATED_TEXT), 0),
        warnings=list(data.warnings),
    )
    if k < config.max_rank:
        if k - config.min_rank + 1 < config.num_negatives:
            raise EmbedtuneError(
                f"the corpus has {n_docs} documents: ranks {config.min_rank}..{k} cannot hold "
                f"{config.num_negatives} negatives"
            )
        report.warn(
            f"max_rank {config.max_rank} exceeds the corpus ({n_docs} documents): the window of all "
            f"{len(data.query_ids)} queries is cut to ranks {config.min_rank}..{k}"
        )
    return report


def _check_short_rows(report: MiningReport, n: int) -> None:
    """Rows left out for want of negatives: a warning, or an error when they are most of the data."""
    if not report.rows_short:
        return
    share = report.rows_short / report.pairs
    message = (
        f"{report.rows_short} of {report.pairs} rows ({share:.1%}) have fewer than {n} negatives after the "
        f"filters (survivors per row: {report.available}) and are left out"
    )
    if 2 * report.rows_short > report.pairs:
        raise EmbedtuneError(
            message + "; that is most of the data: widen the rank window, ask for fewer negatives or loosen the margins"
        )
    report.warn(message)


class _Selector:
    """The rules, applied a chunk of queries at a time, and what survives them (with the report's counts)."""

    def __init__(self, data: MiningInput, config: MiningConfig, report: MiningReport) -> None:
        self.data, self.config, self.report = data, config, report
        self.n_docs = n_docs = len(data.doc_ids)
        self.canon = _canonical_rows(data.doc_texts)
        self.pos_keys = np.unique(data.pair_query * n_docs + data.pair_doc)
        self.pos_canon_keys = np.unique(data.pair_query * n_docs + self.canon[data.pair_doc])
        self.order = np.argsort(data.pair_query, kind="stable")  # rows grouped by query, for chunked retrieval
        self.sorted_queries = data.pair_query[self.order]
        self.query_rows = np.unique(self.sorted_queries)
        self.rng = np.random.default_rng(config.seed)
        self.kept: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        self.removed_scores: dict[str, list[np.ndarray]] = {rule: [] for rule in report.filtered}
        self.positive_scores: list[np.ndarray] = []
        self.available = np.zeros(config.num_negatives + 1, dtype=np.int64)

    def add(self, chunk: np.ndarray, top_scores: np.ndarray, top_rows: np.ndarray, retriever: Retriever) -> None:
        """Select among the ranking of the queries of ``chunk`` for each of their pairs."""
        lo, hi = np.searchsorted(self.sorted_queries, [chunk[0], chunk[-1] + 1])
        rows = self.order[lo:hi]
        q = self.data.pair_query[rows]
        at = np.searchsorted(chunk, q)  # each row's line in the chunk's results
        first = self.config.min_rank - 1
        cand, score = top_rows[at, first:], top_scores[at, first:]
        pos = retriever.pair_scores(q, self.data.pair_doc[rows]).astype(np.float32)
        self.positive_scores.append(pos)
        self.report.candidates_seen += cand.size
        removed = self._filter(q, cand, score, pos)
        cand, score, alive = self._ordered_distinct(cand, score, removed)
        self._take(rows, pos, cand, score, alive)

    def _filter(self, q: np.ndarray, cand: np.ndarray, score: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """The candidates the rules remove, each counted under the first rule that removes it."""
        config = self.config
        base = q[:, None] * self.n_docs
        rules = {
            "known_positive": np.isin(base + cand, self.pos_keys),
            "positive_duplicate": np.isin(base + self.canon[cand], self.pos_canon_keys),
            "max_score": score > config.max_score if config.max_score is not None else None,
            "absolute_margin": (
                score > (pos - config.absolute_margin)[:, None] if config.absolute_margin is not None else None
            ),
            "relative_margin": (
                score > (pos - np.abs(pos) * config.relative_margin)[:, None]
                if config.relative_margin is not None
                else None
            ),
        }
        removed = cand < 0  # a retriever may pad with -1 (as FAISS does) when it finds fewer than k
        for rule, mask in rules.items():
            if mask is None:
                continue
            new = mask & ~removed
            self.report.filtered[rule] += int(new.sum())
            self.removed_scores[rule].append(score[new])
            removed |= mask
        return removed

    def _ordered_distinct(
        self, cand: np.ndarray, score: np.ndarray, removed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Order the window (by rank, or at random), then drop later copies of a text already seen in the row."""
        if self.config.sampling == "random":
            rank_order = np.argsort(self.rng.random(cand.shape), axis=1)
        else:
            rank_order = np.broadcast_to(np.arange(cand.shape[1]), cand.shape)
        cand_o = np.take_along_axis(cand, rank_order, axis=1)
        score_o = np.take_along_axis(score, rank_order, axis=1)
        alive = ~np.take_along_axis(removed, rank_order, axis=1)
        flat = np.flatnonzero(alive)
        text_keys = (flat // cand.shape[1]) * self.n_docs + self.canon[cand_o.ravel()[flat]]
        _, first = np.unique(text_keys, return_index=True)
        repeated = np.ones(len(flat), dtype=bool)
        repeated[first] = False
        alive.ravel()[flat[repeated]] = False
        self.report.filtered[REPEATED_TEXT] += int(repeated.sum())
        self.removed_scores[REPEATED_TEXT].append(score_o.ravel()[flat[repeated]])
        return cand_o, score_o, alive

    def _take(self, rows: np.ndarray, pos: np.ndarray, cand: np.ndarray, score: np.ndarray, alive: np.ndarray) -> None:
        """Keep the first ``num_negatives`` survivors of each row that has that many."""
        n = self.config.num_negatives
        taken = alive & (np.cumsum(alive, axis=1) <= n)
        counts = taken.sum(axis=1)
        self.available += np.bincount(counts, minlength=n + 1)
        full = counts == n
        pick = np.argsort(~taken[full], axis=1, kind="stable")[:, :n]  # the n taken slots, in order
        pairs, negatives, scores = self.kept
        pairs.append(rows[full])
        negatives.append(np.take_along_axis(cand[full], pick, axis=1))
        neg_scores = np.take_along_axis(score[full], pick, axis=1)
        scores.append(np.concatenate([pos[full, None], neg_scores], axis=1))

    def result(self) -> MinedRows:
        """The rows kept, with the report's totals and histograms filled in."""
        mined = MinedRows(*(np.concatenate(parts) for parts in self.kept))
        report = self.report
        report.rows_written = len(mined.pairs)
        report.negatives_written = int(mined.negatives.size)
        report.rows_short = report.pairs - report.rows_written
        report.available = self.available.tolist()
        removed_all = {rule: np.concatenate(parts) for rule, parts in self.removed_scores.items() if parts}
        report.histograms = histograms(np.concatenate(self.positive_scores), mined.scores[:, 1:].ravel(), removed_all)
        return mined
