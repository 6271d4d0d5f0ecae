"""Exporting an index to a vector store: its vectors, ids, texts and manifest, written to a Qdrant collection.

The vectors are read back from the FAISS index by id (exactly for flat, HNSW and IVF-flat; the
quantised types keep approximations only, and say so), a batch at a time, with the documents of the
same ids from the store, so an export holds a batch in memory, not the index's texts. The manifest is
written last, into the collection's metadata: that is the commit point
(:mod:`embedtune.index.qdrant` refuses a collection without one), so an interrupted export is never
searched as if it were complete.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.index.index import Index
from embedtune.index.manifest import DEFAULT_INDEXES_DIR
from embedtune.index.qdrant import MANIFEST_KEY, location
from embedtune.index.types import IVF_TYPES

UPLOAD_BATCH = 512
LOSSY_TYPES = ("sq8", "ivf-sq8", "ivf-pq")


@dataclass(frozen=True)
class ExportResult:
    uri: str  # what Index.load, search --index and eval --index open
    collection: str
    count: int


def export_index(
    index: str | Path,
    *,
    url: str | None = None,
    path: str | Path | None = None,
    collection: str | None = None,
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    overwrite: bool = False,
) -> ExportResult:
    """Write index ``index``'s vectors, ids, texts and manifest to Qdrant ``collection`` (default: its name).

    ``url`` is a Qdrant server, ``path`` a local-mode folder (exactly one). An existing collection is
    replaced only with ``overwrite``. Returns the URI that ``Index.load`` (and ``search``/``eval``) open.
    """
    loaded = Index.load(index, indexes_dir, mmap=False)
    try:
        where = location(url=url, path=path, collection=collection or loaded.name)
        if loaded.manifest.index_type in LOSSY_TYPES:
            warnings.warn(
                f"a {loaded.manifest.index_type} index keeps quantised vectors only: those approximations are exported",
                EmbedtuneWarning,
                stacklevel=2,
            )
        client = where.client()
        try:
            count = _write(client, where.collection, loaded, where.uri, overwrite)
        finally:
            client.close()
    finally:
        loaded.close()
    return ExportResult(where.uri, where.collection, count)


def _write(client, collection: str, index: Index, uri: str, overwrite: bool) -> int:
    from qdrant_client import models

    if client.collection_exists(collection):
        if not overwrite:
            raise EmbedtuneError(f"{uri}: collection already exists; overwrite it or choose another name")
        client.delete_collection(collection)
    params = models.VectorParams(size=index.manifest.dimension, distance=models.Distance.DOT)
    client.create_collection(collection, vectors_config=params)
    count = 0
    for points in _points(index):
        client.upsert(collection, points=points, wait=True)
        count += len(points)
    # The commit point: a collection is searchable only once it carries the manifest.
    manifest = asdict(index.manifest) | {"count": count, "vectors": count, "tombstones": 0}
    client.update_collection(collection, metadata={MANIFEST_KEY: manifest})
    return count


def _points(index: Index) -> Iterator[list]:
    """The live documents of ``index`` as Qdrant points (id = FAISS id), a batch at a time."""
    import faiss
    from qdrant_client import models

    if index.manifest.index_type in IVF_TYPES:
        faiss.extract_index_ivf(index.faiss_index).make_direct_map()  # reconstruct by id
    rows = index.store.iter_ids()
    while batch := list(itertools.islice(rows, UPLOAD_BATCH)):
        fids = [fid for fid, _ in batch]
        vectors = index.faiss_index.reconstruct_batch(np.asarray(fids, dtype=np.int64))
        docs = index.lookup(fids)
        yield [
            models.PointStruct(
                id=fid,
                vector=vector.tolist(),
                payload={"doc_id": docs[fid].doc_id, "text": docs[fid].text, "metadata": docs[fid].metadata},
            )
            for fid, vector in zip(fids, vectors, strict=True)
        ]
