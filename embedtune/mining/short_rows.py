"""Rows with fewer negatives than asked for, written so that every loss still trains correctly on them.

sentence-transformers reads an n-tuple file as columns, so every row needs ``num_negatives``
negative columns. A row that is still short after the window was widened follows ``short_rows``:

* ``pad`` (the default): a row with some negatives repeats its own lowest-scored one (with its score)
  into the missing columns. Every column is then a real negative of that query: for MNRL and
  cached MNRL a repeated negative counts once per copy in the softmax's denominator (its logit raised by
  ``log(copies)``), and for MarginMSE its margin, which is the teacher's, is fitted with more weight.
  Nothing wrong is learnt; the repeat is the row's least-hard negative, the least likely to be an
  unlabelled positive, so weighting it up is the safest choice. A row with no negative at all is
  kept as a plain pair (below).
* ``pair``: every short row is kept as a plain pair, its few negatives set aside, so no negative
  is weighted up.
* ``drop``: short rows are left out (as mining did before), a warning, or an error when they are most
  of the rows.

A plain pair is never written into the n-tuple file: its only stand-in for a negative would be its own
positive, and a mined file is an artefact users take to other tools (sentence-transformers,
FlagEmbedding), where a row whose negative is its positive teaches the opposite of the truth. Plain
pairs go to a companion pairs file beside it (:func:`~embedtune.mining.report.pairs_path`), which
``train --mine`` trains as a second dataset of the same run (in-batch negatives only, as pairs do);
the report counts both.

Bucketing rows by their number of negatives was not chosen: it needs one dataset per bucket, and
small buckets make small batches, which weaken in-batch negatives. In the file, ``negative_ids``
lists the id of every column, so a padded row shows the repeats; the report counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.mining.config import MiningInput
from embedtune.mining.report import MiningReport


@dataclass
class MinedRows:
    """Mined rows by position: pair index, negative corpus rows and scores (positive first).

    ``found[r]`` negatives of row ``r`` were mined; its later columns are filling (module docstring).
    ``plain`` are the pairs kept without a negative, for the companion pairs file.
    """

    pairs: np.ndarray  # (rows,) index into MiningInput pairs
    negatives: np.ndarray  # (rows, n) corpus rows
    scores: np.ndarray  # (rows, n + 1): the positive's score, then each negative's
    found: np.ndarray | None = None  # (rows,) how many negatives were mined, not filled in; None: all
    plain: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # pair indices

    def __post_init__(self) -> None:
        if self.found is None:
            self.found = np.full(len(self.pairs), self.negatives.shape[1], dtype=np.int64)

    def mined_scores(self) -> np.ndarray:
        """The scores of the mined negatives (filling left out)."""
        return self.scores[:, 1:][np.arange(self.negatives.shape[1]) < self.found[:, None]]


def settle_short_rows(mined: MinedRows, data: MiningInput, policy: str, report: MiningReport) -> MinedRows:
    """Pad, turn into plain pairs, or drop the rows with fewer than ``num_negatives`` negatives; count them.

    ``mined.negatives`` holds ``-1`` after a row's ``found`` negatives.
    """
    n = mined.negatives.shape[1]
    short = mined.found < n
    report.rows_short = int(short.sum())
    if policy == "drop":
        mined = MinedRows(*(part[~short] for part in (mined.pairs, mined.negatives, mined.scores, mined.found)))
        report.rows_dropped = report.rows_short
    else:
        as_pair = mined.found == 0 if policy == "pad" else short
        _pad(mined, short & ~as_pair)
        plain = mined.pairs[as_pair]
        mined = MinedRows(*(part[~as_pair] for part in (mined.pairs, mined.negatives, mined.scores, mined.found)))
        mined.plain = plain
        report.rows_padded = int((short & ~as_pair).sum())
        report.rows_as_pairs = int(as_pair.sum())
    report.rows_written = len(mined.pairs) + len(mined.plain)
    report.negatives_written = int(mined.found.sum())
    _warn_short(report, n, policy)
    return mined


def _pad(mined: MinedRows, rows: np.ndarray) -> None:
    """Repeat each row's lowest-scored mined negative into its empty columns."""
    rows = np.flatnonzero(rows)
    if not rows.size:
        return
    n = mined.negatives.shape[1]
    empty = np.arange(n) >= mined.found[rows, None]
    neg_scores = np.where(empty, np.inf, mined.scores[rows, 1:])
    last = np.argmin(neg_scores, axis=1)
    fill_doc = mined.negatives[rows, last]
    fill_score = mined.scores[rows, 1 + last]
    mined.negatives[rows] = np.where(empty, fill_doc[:, None], mined.negatives[rows])
    mined.scores[rows, 1:] = np.where(empty, fill_score[:, None], mined.scores[rows, 1:])


def _warn_short(report: MiningReport, n: int, policy: str) -> None:
    """Rows short of negatives: a warning, or an error when dropping them would leave out most of the data."""
    if not report.rows_short:
        return
    share = report.rows_short / report.pairs
    reach = f" (the window widened to rank {report.widened_to})" if report.widened_to else ""
    message = (
        f"{report.rows_short} of {report.pairs} rows ({share:.1%}) have fewer than {n} negatives after the "
        f"filters{reach}"
    )
    if policy != "drop":
        report.warn(
            f"{message}: {report.rows_padded} kept with their own lowest-scored negative repeated, "
            f"{report.rows_as_pairs} kept as plain pairs (in the companion pairs file)"
        )
        return
    message += f" (survivors per row: {report.available}) and are left out"
    if 2 * report.rows_short > report.pairs:
        raise EmbedtuneError(
            message + "; that is most of the data: widen the rank window, ask for fewer negatives or loosen the margins"
        )
    report.warn(message)
