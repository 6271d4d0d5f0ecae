"""Choosing negatives: a retriever's ranking in, per (query, positive) pair the surviving candidates out.

Candidates are the documents at ranks ``min_rank..max_rank`` (1-based, in the retriever's ranking
of the whole corpus, positives included). Rules are applied in :data:`FILTER_RULES` order and each
removed candidate is counted under the first rule that removes it; then later copies of a text
already taken in the row go (``repeated_text``). Query ids whose normalised texts are equal are one
query to the rules: a positive of either (or a copy of one) is a known positive of both, so it is
never mined as a negative of the other.

No pair is lost for want of negatives (:mod:`embedtune.mining.short_rows` says how short rows are
written and why that keeps every loss correct):

1. **Widening.** Rows with fewer than ``num_negatives`` survivors are searched again with the
   window's end doubled (``max_rank``, ``2 max_rank``, ``4 max_rank``, ...) until they are full or the
   end reaches ``widen_max_rank`` or the corpus. Only those rows' queries are searched again, in
   chunks of ``chunk_size * max_rank / end`` queries, so the candidates held in memory never exceed
   the first pass's; there are at most ``log2(widen_max_rank / max_rank)`` passes. A pass examines only
   the ranks the previous one had not (every candidate is counted once) and appends its survivors to
   the row's earlier ones (which a short row took all of).
2. **Short rows.** Rows still short follow ``short_rows``: ``pad`` (the default) keeps them padded,
   ``pair`` keeps them as plain pairs, ``drop`` leaves them out (an error if that is most rows).
   A row is never dropped otherwise; only a pair without a positive never reaches mining.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.mining.config import MiningConfig, MiningInput
from embedtune.mining.report import MiningReport, histograms
from embedtune.mining.short_rows import MinedRows, settle_short_rows
from embedtune.retrieval import Retriever

FILTER_RULES = ("known_positive", "positive_duplicate", "max_score", "absolute_margin", "relative_margin")
REPEATED_TEXT = "repeated_text"  # a second copy of a text already taken earlier in the same row


def normalise_text(text: str) -> str:
    """Case- and whitespace-insensitive form used to spot copies of a positive (and queries asked twice)."""
    return " ".join(text.casefold().split())


def _canonical_rows(texts: Sequence[str]) -> np.ndarray:
    """For each text, the first row whose normalised text equals its own."""
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
    end = report.window[1]
    with tqdm(total=len(selector.query_rows), desc="Mining", unit="query", disable=not show_progress) as progress:
        for start in range(0, len(selector.query_rows), config.chunk_size):
            chunk = selector.query_rows[start : start + config.chunk_size]
            selector.add(chunk, *retriever.search(chunk, end), retriever, first_column=config.min_rank - 1)
            progress.update(len(chunk))
    _widen(selector, retriever, config, end)
    mined = selector.result()
    report.seconds["mine"] = round(time.perf_counter() - started, 2)
    return mined, report


def _widen(selector: _Selector, retriever: Retriever, config: MiningConfig, end: int) -> None:
    """Search the queries of short rows again, the window's end doubled each pass (module docstring, 1.)."""
    limit = min(max(config.widen_max_rank, end), selector.n_docs)
    budget = config.chunk_size * end  # candidates held at once in the first pass: never exceeded
    widened: set[int] = set()
    while (short := selector.short_rows()).size and end < limit:
        new_end = min(2 * end, limit)
        widened.update(short.tolist())
        queries = np.unique(selector.data.pair_query[short])
        step = max(1, budget // new_end)
        for start in range(0, len(queries), step):
            chunk = queries[start : start + step]
            rows = short[np.isin(selector.data.pair_query[short], chunk)]
            selector.add(chunk, *retriever.search(chunk, new_end), retriever, first_column=end, rows=rows)
        end = new_end
    report = selector.report
    report.rows_widened = len(widened)
    report.rows_widened_filled = int((selector.found[list(widened)] == config.num_negatives).sum()) if widened else 0
    report.widened_to = end if widened else 0


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


class _Selector:
    """The rules, applied a chunk of queries at a time, and what survives them (with the report's counts).

    Each pair row's taken negatives live in ``negatives``/``neg_scores`` (``found`` of them, in order);
    a widening pass appends to them.
    """

    def __init__(self, data: MiningInput, config: MiningConfig, report: MiningReport) -> None:
        self.data, self.config, self.report = data, config, report
        self.n_docs = n_docs = len(data.doc_ids)
        self.canon = _canonical_rows(data.doc_texts)
        self.query_canon = qc = _canonical_rows(data.query_texts)  # query ids asked in the same words: one query
        self.pos_keys = np.unique(qc[data.pair_query] * n_docs + data.pair_doc)
        self.pos_canon_keys = np.unique(qc[data.pair_query] * n_docs + self.canon[data.pair_doc])
        shared = np.bincount(qc, minlength=len(qc))[qc] > 1
        report.shared_text_queries = int(shared.sum())
        # The keys by query id, only to count what sharing a text removes (when any query shares one).
        self.own_keys = (
            (
                np.unique(data.pair_query * n_docs + data.pair_doc),
                np.unique(data.pair_query * n_docs + self.canon[data.pair_doc]),
            )
            if shared.any()
            else None
        )
        self.order = np.argsort(data.pair_query, kind="stable")  # rows grouped by query, for chunked retrieval
        self.sorted_queries = data.pair_query[self.order]
        self.query_rows = np.unique(self.sorted_queries)
        self.rng = np.random.default_rng(config.seed)
        n_pairs, n = len(data.pair_query), config.num_negatives
        self.negatives = np.full((n_pairs, n), -1, dtype=np.int64)
        self.neg_scores = np.zeros((n_pairs, n), dtype=np.float32)
        self.found = np.zeros(n_pairs, dtype=np.int64)
        self.positive = np.zeros(n_pairs, dtype=np.float32)
        self.removed_scores: dict[str, list[np.ndarray]] = {rule: [] for rule in report.filtered}

    def add(
        self,
        chunk: np.ndarray,
        top_scores: np.ndarray,
        top_rows: np.ndarray,
        retriever: Retriever,
        *,
        first_column: int,
        rows: np.ndarray | None = None,
    ) -> None:
        """Select among ranks ``first_column + 1..`` of the queries of ``chunk``, for ``rows`` (all their pairs
        when ``None``, the first pass, which also scores the positives)."""
        if rows is None:
            lo, hi = np.searchsorted(self.sorted_queries, [chunk[0], chunk[-1] + 1])
            rows = self.order[lo:hi]
            self.positive[rows] = retriever.pair_scores(self.data.pair_query[rows], self.data.pair_doc[rows])
        q = self.data.pair_query[rows]
        at = np.searchsorted(chunk, q)  # each row's line in the chunk's results
        cand, score = top_rows[at, first_column:], top_scores[at, first_column:]
        self.report.candidates_seen += cand.size
        removed = self._filter(q, cand, score, self.positive[rows])
        cand, score, alive = self._ordered_distinct(rows, cand, score, removed)
        self._take(rows, cand, score, alive)

    def _filter(self, q: np.ndarray, cand: np.ndarray, score: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """The candidates the rules remove, each counted under the first rule that removes it."""
        config = self.config
        base = self.query_canon[q][:, None] * self.n_docs
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
        if self.own_keys is not None:
            own = q[:, None] * self.n_docs
            by_id = np.isin(own + cand, self.own_keys[0]) | np.isin(own + self.canon[cand], self.own_keys[1])
            shared_only = (rules["known_positive"] | rules["positive_duplicate"]) & ~by_id & ~removed
            self.report.shared_positives_removed += int(shared_only.sum())
        for rule, mask in rules.items():
            if mask is None:
                continue
            new = mask & ~removed
            self.report.filtered[rule] += int(new.sum())
            self.removed_scores[rule].append(score[new])
            removed |= mask
        return removed

    def _ordered_distinct(
        self, rows: np.ndarray, cand: np.ndarray, score: np.ndarray, removed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Order the window (by rank, or at random) after the negatives the rows took before, then drop later
        copies of a text already seen in the row."""
        if self.config.sampling == "random":
            rank_order = np.argsort(self.rng.random(cand.shape), axis=1)
        else:
            rank_order = np.broadcast_to(np.arange(cand.shape[1]), cand.shape)
        n = self.config.num_negatives
        taken_before = np.arange(n) < self.found[rows, None]
        cand_o = np.concatenate([self.negatives[rows], np.take_along_axis(cand, rank_order, axis=1)], axis=1)
        score_o = np.concatenate([self.neg_scores[rows], np.take_along_axis(score, rank_order, axis=1)], axis=1)
        alive = np.concatenate([taken_before, ~np.take_along_axis(removed, rank_order, axis=1)], axis=1)
        flat = np.flatnonzero(alive)
        text_keys = (flat // cand_o.shape[1]) * self.n_docs + self.canon[cand_o.ravel()[flat]]
        _, first = np.unique(text_keys, return_index=True)  # the earliest of each text: earlier takes come first
        repeated = np.ones(len(flat), dtype=bool)
        repeated[first] = False
        alive.ravel()[flat[repeated]] = False
        self.report.filtered[REPEATED_TEXT] += int(repeated.sum())
        self.removed_scores[REPEATED_TEXT].append(score_o.ravel()[flat[repeated]])
        return cand_o, score_o, alive

    def _take(self, rows: np.ndarray, cand: np.ndarray, score: np.ndarray, alive: np.ndarray) -> None:
        """Keep the first ``num_negatives`` survivors of each row (all of them, if fewer)."""
        n = self.config.num_negatives
        taken = alive & (np.cumsum(alive, axis=1) <= n)
        pick = np.argsort(~taken, axis=1, kind="stable")[:, :n]  # the taken slots first, in order
        filled = np.arange(n) < taken.sum(axis=1)[:, None]
        self.negatives[rows] = np.where(filled, np.take_along_axis(cand, pick, axis=1), -1)
        self.neg_scores[rows] = np.where(filled, np.take_along_axis(score, pick, axis=1), 0)
        self.found[rows] = filled.sum(axis=1)

    def short_rows(self) -> np.ndarray:
        """Pair rows with fewer than ``num_negatives`` negatives so far, in query order."""
        return self.order[self.found[self.order] < self.config.num_negatives]

    def result(self) -> MinedRows:
        """The rows written, with the report's totals and histograms filled in."""
        report, rows = self.report, self.order
        report.available = np.bincount(self.found, minlength=self.config.num_negatives + 1).tolist()
        scores = np.concatenate([self.positive[rows, None], self.neg_scores[rows]], axis=1)
        mined = MinedRows(rows, self.negatives[rows], scores, self.found[rows])
        mined = settle_short_rows(mined, self.data, self.config.short_rows, report)
        removed_all = {rule: np.concatenate(parts) for rule, parts in self.removed_scores.items() if parts}
        report.histograms = histograms(self.positive, mined.mined_scores(), removed_all)
        return mined
