"""The BM25 side of an index, saved beside its FAISS file (the in-memory BM25 is :mod:`embedtune.bm25`).

``lexical.G.npz`` belongs to generation ``G`` like ``index.G.faiss`` and ``docs.G.sqlite``: it is
written into the generation before the commit, named with its size and digests in the manifest's
file records, checked at every load, and replaced by every ``add``/``remove``. It holds BM25's
(term x document) score matrix, the stem vocabulary and the
FAISS id of each column, so lexical hits are FAISS ids like dense ones and both read the same store.

BM25's statistics (document frequencies, average length) change with every document, and bm25s has
no incremental update, so an update rebuilds this side from the new generation's store: the texts
are already there, and tokenising is cheap next to encoding. It can therefore never disagree with the
store: a document added is found, a removed one is not, in every mode.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedtune.bm25 import ANALYSIS, BM25, K1, B
from embedtune.errors import EmbedtuneError
from embedtune.index.store import DocStore
from embedtune.settings import setting, validate


def lexical_file(generation: int) -> str:
    return f"lexical.{generation}.npz"


@dataclass(frozen=True)
class LexicalSettings:
    """Whether an index keeps a BM25 side for lexical and hybrid search."""

    bm25: bool = setting(
        True,
        help="Also store a BM25 index of the texts beside the vectors, for 'search --mode bm25|hybrid' "
        "(rebuilt by every add/remove).",
        flag="--bm25/--no-bm25",
    )

    def __post_init__(self) -> None:
        validate(self)


def _empty_state() -> dict[str, np.ndarray]:
    """:meth:`BM25.state` of a BM25 index over no documents: no terms, no columns."""
    return {
        "data": np.zeros(0, dtype=np.float32),
        "indices": np.zeros(0, dtype=np.int32),
        "indptr": np.zeros(1, dtype=np.int32),
        "shape": np.zeros(2, dtype=np.int64),
        "vocab": np.frombuffer(b"{}", dtype=np.uint8),
    }


class LexicalIndex:
    """BM25 over an index's live documents; :meth:`search` answers with FAISS ids (-1 pads)."""

    def __init__(self, bm25, fids: np.ndarray) -> None:
        self.bm25, self.fids = bm25, np.asarray(fids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.fids)

    @classmethod
    def from_store(cls, store: DocStore) -> LexicalIndex:
        """BM25 over every live document of ``store``, columns in FAISS-id order.

        A store whose every document was removed gets an empty side rather than none: the index still
        has BM25 (bm25 and hybrid searches find nothing, as dense ones do), and the next ``add`` fills it.
        """
        fids = np.fromiter((fid for fid, _ in store.iter_ids()), dtype=np.int64)
        texts = list(store.iter_column("text"))
        if not texts:
            return cls(BM25.from_state(_empty_state(), []), fids)
        return cls(BM25(dict(zip(map(str, fids), texts, strict=True)), k1=K1, b=B), fids)

    def save(self, path: Path) -> None:
        """Write the index to ``path`` (inside a generation: the commit makes it durable and records it)."""
        buffer = io.BytesIO()
        np.savez(buffer, fids=self.fids, **self.bm25.state())
        path.write_bytes(buffer.getbuffer())

    @classmethod
    def load(cls, path: Path) -> LexicalIndex:
        try:
            with np.load(path, allow_pickle=False) as saved:
                state = {name: saved[name] for name in saved.files}
            fids = state.pop("fids")
            return cls(BM25.from_state(state, [str(f) for f in fids]), fids)
        except (OSError, ValueError, KeyError) as e:
            raise EmbedtuneError(f"{path}: unreadable BM25 index ({e}); rebuild the index") from e

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, FAISS ids)`` of the top-``k`` BM25 matches per query; non-matching documents are -1."""
        scores, rows = self.bm25.top_k(self.bm25.query_terms(queries), k)
        return scores, np.where(scores > 0, self.fids[rows], -1)


def write_lexical(store: DocStore, path: Path) -> dict[str, object]:
    """Build the BM25 side of ``store`` into ``path``; returns what the manifest says of it."""
    import time

    started = time.perf_counter()
    lexical = LexicalIndex.from_store(store)
    lexical.save(path)
    terms = int(lexical.bm25.state()["shape"][0])
    seconds = round(time.perf_counter() - started, 2)
    return {"documents": len(lexical), "terms": terms, "k1": K1, "b": B, "seconds": seconds} | ANALYSIS
