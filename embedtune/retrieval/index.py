"""Index-backed retrieval: the search a built embedtune index really serves, behind the Retriever contract.

Queries are encoded by the index's own :class:`~embedtune.index.Searcher` (its model, precision and
query prompt) and searched in its FAISS type with the calibrated ``nprobe``/``ef_search``, so
whatever an approximate index loses shows in what consumes this retriever, evaluation above all.
Rows of the corpus are the index's documents in FAISS-id order by default, or positions in any
given list of document ids (a corpus another retriever ranks too); FAISS ids become rows through
the index's :meth:`~embedtune.index.Index.row_map`, with no per-hit lookups in the document store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from embedtune.errors import EmbedtuneError

if TYPE_CHECKING:
    from embedtune.index import Index, Searcher


class IndexRetriever:
    """Top-k of a built index for rows of ``queries`` (texts), searched with the index's model.

    ``doc_ids`` are the corpus rows answers are given in (default: the index's own documents, in
    FAISS-id order); an indexed document missing from them is never returned. ``searcher`` reuses a
    loaded :class:`~embedtune.index.Searcher` of ``index`` (else one is made); ``nprobe``/``ef_search``
    override the index's calibrated search settings.
    """

    def __init__(
        self,
        index: Index,
        queries: Sequence[str],
        *,
        doc_ids: Sequence[str] | None = None,
        searcher: Searcher | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        show_progress: bool = True,
    ) -> None:
        from embedtune.index import Searcher

        self.index = index
        self.searcher = searcher or Searcher(index)
        self.queries = list(queries)
        self.name = f"index:{index.name}"
        self.doc_ids = list(doc_ids) if doc_ids is not None else index.doc_ids
        self._row_map = index.row_map(self.doc_ids)
        self._knobs = {"nprobe": nprobe, "ef_search": ef_search}
        self.show_progress = show_progress

    def _encode(self, query_rows: np.ndarray) -> np.ndarray:
        texts = [self.queries[r] for r in query_rows]
        return self.searcher.encode_queries(texts, show_progress=self.show_progress)

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search_rows(self._encode(query_rows), k, self._row_map, **self._knobs)

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        """Cosines of the query vectors with the index's stored (possibly compressed) document vectors."""
        fid_of_row = np.full(len(self.doc_ids), -1, dtype=np.int64)
        indexed = np.flatnonzero(self._row_map >= 0)
        fid_of_row[self._row_map[indexed]] = indexed
        fids = fid_of_row[doc_rows]
        if (fids < 0).any():
            raise EmbedtuneError(f"index '{self.index.name}' does not hold every document asked to be scored")
        try:
            docs = np.stack([self.index.faiss_index.reconstruct(int(f)) for f in fids])
        except RuntimeError as e:
            raise EmbedtuneError(
                f"index '{self.index.name}' cannot return its vectors (its FAISS type does not keep them "
                "by id), so it cannot score given (query, document) pairs"
            ) from e
        return np.einsum("ij,ij->i", self._encode(query_rows), docs.astype(np.float32, copy=False))
