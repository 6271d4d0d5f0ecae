"""Train/dev/test splits that do not leak, and pairs files turned into BEIR folders.

``assign`` (which split each query goes to: :class:`SplitSettings`, near-duplicate and
shared-document groups), ``beir`` (:func:`split_beir`: new qrels for a BEIR folder), ``pairs``
(:func:`pairs_split`: the rows of a (query, positive) file as a retrieval split; :func:`load_retrieval`:
a BEIR split or a pairs file as one, for evaluation and mining; :func:`pairs_to_beir`: such a file as a
BEIR folder, optionally split) and ``report`` (:class:`SplitReport`).
"""

from embedtune.splits.assign import Assignment, SplitSettings, assign_queries, duplicate_key, split_targets
from embedtune.splits.beir import split_beir
from embedtune.splits.pairs import load_retrieval, pairs_split, pairs_to_beir, text_id
from embedtune.splits.report import SplitReport

__all__ = [
    "Assignment",
    "SplitReport",
    "SplitSettings",
    "assign_queries",
    "duplicate_key",
    "load_retrieval",
    "pairs_split",
    "pairs_to_beir",
    "split_beir",
    "split_targets",
    "text_id",
]
