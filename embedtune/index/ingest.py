"""The steps a build and an update share: store and encode corpus records a chunk at a time, then add
the vectors to FAISS.

Only a chunk of texts (``ENCODE_CHUNK`` documents) is ever held in memory, so a corpus of any size
streams through; a document id repeated in the corpus, or already stored, is a located
:class:`~embedtune.errors.DataError` rather than a second row.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from embedtune.data import CorpusRecord
from embedtune.encoding import Encoder
from embedtune.errors import DataError
from embedtune.index.store import DocStore

ENCODE_CHUNK = 4096  # documents read, stored and encoded at a time: bounds the texts held in memory
ADD_CHUNK = 65_536  # vectors added to FAISS at a time (progress bar granularity)


class Ingest:
    """Stores documents and encodes them chunk by chunk, so no more than a chunk of texts is in memory."""

    def __init__(self, store: DocStore, encoder: Encoder, prompt_name: str | None, batch_size: int, progress):
        self.store, self.encoder, self.prompt_name = store, encoder, prompt_name
        self.batch_size, self.progress = batch_size, progress
        self.next_fid = store.next_fid()
        self.vectors: list[np.ndarray] = []
        self.fids: list[np.ndarray] = []
        self.seconds = 0.0

    def add(self, records: list[CorpusRecord], path: Path) -> None:
        if not records:
            return
        stored, seen = self.store.hashes([r.doc_id for r in records]), set()
        for r in records:
            if r.doc_id in seen or r.doc_id in stored:
                raise DataError(path, f"duplicate document id '{r.doc_id}'", line=r.line, field="_id")
            seen.add(r.doc_id)
        fids = np.arange(self.next_fid, self.next_fid + len(records), dtype=np.int64)
        self.store.insert((int(f), r.doc_id, r.text, r.metadata) for f, r in zip(fids, records, strict=True))
        self.next_fid += len(records)
        started = time.perf_counter()
        self.vectors.append(
            self.encoder.encode(
                [r.text for r in records],
                batch_size=self.batch_size,
                show_progress=False,
                prompt_name=self.prompt_name,
            )
        )
        self.seconds += time.perf_counter() - started
        self.fids.append(fids)
        self.progress.update(len(records))

    def result(self, dimension: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.vectors:
            return np.zeros((0, dimension), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return np.vstack(self.vectors), np.concatenate(self.fids)


def progress_bar(total: int | None, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="doc", disable=not show, dynamic_ncols=True)


def chunked(records: Iterable[CorpusRecord], size: int = ENCODE_CHUNK) -> Iterator[list[CorpusRecord]]:
    chunk: list[CorpusRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def add_vectors(faiss_index, vectors: np.ndarray, fids: np.ndarray, show_progress: bool) -> None:
    with progress_bar(len(vectors), "adding to FAISS", show_progress and len(vectors) > ADD_CHUNK) as bar:
        for start in range(0, len(vectors), ADD_CHUNK):
            faiss_index.add_with_ids(vectors[start : start + ADD_CHUNK], fids[start : start + ADD_CHUNK])
            bar.update(min(ADD_CHUNK, len(vectors) - start))
