"""Train/dev/test splits that do not leak, and pairs files turned into BEIR folders.

``assign`` (which split each query goes to: :class:`SplitSettings`, near-duplicate and
shared-document groups), ``beir`` (:func:`split_beir`: new qrels for a BEIR folder), ``pairs``
(:func:`pairs_to_beir`: a (query, positive) file as a BEIR folder, optionally split;
:func:`pairs_as_beir`: a temporary one for evaluation and mining) and ``report`` (:class:`SplitReport`).
"""

from embedtune.splits.assign import Assignment, SplitSettings, assign_queries, duplicate_key, split_targets
from embedtune.splits.beir import split_beir
from embedtune.splits.pairs import pairs_as_beir, pairs_to_beir, text_id
from embedtune.splits.report import SplitReport

__all__ = [
    "Assignment",
    "SplitReport",
    "SplitSettings",
    "assign_queries",
    "duplicate_key",
    "pairs_as_beir",
    "pairs_to_beir",
    "split_beir",
    "split_targets",
    "text_id",
]
