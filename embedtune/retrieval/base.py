"""What every retriever is: top-k of one corpus for rows of one set of queries, plus pair scores.

A retriever is built for a :class:`RetrievalInput` (a corpus and a set of queries, both by
position) and answers in rows of it, never in ids or texts: mining, evaluation and (later) hybrid
search ask for ``search(query_rows, k)`` in chunks of any size, so no consumer holds a query x
corpus score matrix, and the mapping between ids and rows is made once, here, instead of in each
consumer. One contract means one way to rank a corpus: a faster search path reaches every consumer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from embedtune.data import RetrievalSplit


@dataclass
class RetrievalInput:
    """A corpus and a set of queries, by position: row ``i`` of the corpus is ``doc_ids[i]``/``doc_texts[i]``.

    The rows retrievers answer in, not a second split type: no qrels, and made from a
    :class:`~embedtune.data.RetrievalSplit` (:meth:`from_split`) or from any corpus and queries.
    """

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]

    @classmethod
    def from_split(cls, split: RetrievalSplit) -> RetrievalInput:
        """The whole corpus of a split and its judged queries, in the split's order."""
        return cls(
            doc_ids=list(split.corpus),
            doc_texts=list(split.corpus.values()),
            query_ids=list(split.queries),
            query_texts=list(split.queries.values()),
        )


class Retriever(Protocol):
    """Top-k of the corpus for chunks of queries, and the score of given (query, document) pairs.

    ``name`` says what ranks (``"bm25"``, ``"dense:<model>"``, ``"index:<name>"``) in reports.
    """

    name: str

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, doc_rows)``, each ``(len(query_rows), min(k, corpus size))``, best first.

        A retriever that finds fewer than ``k`` documents pads ``doc_rows`` with -1 (as FAISS does), and
        marks -1 any result that is no row of the corpus (an indexed document outside it).
        """
        ...

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        """The score of query row ``query_rows[i]`` against corpus row ``doc_rows[i]``, for each ``i``."""
        ...
