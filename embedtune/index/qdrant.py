"""Qdrant collections holding exported indexes: where they live, and reading and searching one.

:func:`embedtune.index.export.export_index` writes an index's live vectors (FAISS id = Qdrant point id), document ids,
texts and metadata to a collection, then, as its commit point, the index manifest into the
collection's metadata: a collection without one (an export that did not finish, or another
program's) is refused when opened, never searched. :class:`QdrantCollection` is what
:meth:`Index.load <embedtune.index.Index.load>` wraps for a ``qdrant://`` URI
(:class:`embedtune.index.reader.QdrantIndex`), so :class:`~embedtune.index.Searcher`, the index
retriever, ``search`` and ``eval`` serve a collection unchanged, with the same model check: it is
searched only with the model whose fingerprint its manifest records. The URIs:

* ``qdrant:///abs/path?collection=NAME`` — Qdrant's local mode (a folder, no server);
* ``qdrant://host:port/NAME`` — a Qdrant server (``QDRANT_API_KEY`` from the environment).

Vectors are stored with the dot product, which on normalised vectors is the index's own score.
Needs the optional extra ``qdrant`` (``qdrant-client``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.index.manifest import Manifest
from embedtune.index.store import StoredDoc

SCHEME = "qdrant://"
MANIFEST_KEY = "embedtune_manifest"
QUERY_BATCH = 256


def is_qdrant_uri(index: object) -> bool:
    return str(index).startswith(SCHEME)


@dataclass(frozen=True)
class Location:
    """Where a collection lives: a server ``url`` or a local-mode ``path``, and its name."""

    collection: str
    url: str | None = None
    path: Path | None = None

    @property
    def uri(self) -> str:
        if self.path is not None:
            return f"{SCHEME}{self.path}?collection={self.collection}"
        parsed = urlparse(self.url)
        return f"{SCHEME}{parsed.netloc}/{self.collection}"

    def client(self):
        try:
            from qdrant_client import QdrantClient
        except ImportError as e:
            raise EmbedtuneError("qdrant-client is not installed: pip install 'embedtune[qdrant]'") from e
        try:
            if self.path is not None:
                return QdrantClient(path=str(self.path))
            return QdrantClient(url=self.url, api_key=os.environ.get("QDRANT_API_KEY"))
        except (RuntimeError, OSError, ValueError) as e:  # local mode: a folder another client holds
            raise EmbedtuneError(f"{self.uri}: cannot open Qdrant ({e})") from e


def parse_uri(uri: str) -> Location:
    """The :class:`Location` of a ``qdrant://`` URI (see the module docstring); a bad one is a one-line error."""
    parsed = urlparse(uri)
    query = parse_qs(parsed.query)
    if parsed.netloc:  # a server: qdrant://host:port/collection
        collection = parsed.path.strip("/")
        if not collection or "/" in collection:
            raise EmbedtuneError(f"{uri}: name one collection: qdrant://HOST:PORT/COLLECTION")
        return Location(collection, url=f"http://{parsed.netloc}")
    collection = (query.get("collection") or [""])[0]
    if not parsed.path.startswith("/") or not collection:
        raise EmbedtuneError(f"{uri}: local mode is qdrant:///ABSOLUTE/PATH?collection=NAME")
    return Location(collection, path=Path(parsed.path))


def location(*, url: str | None, path: str | Path | None, collection: str) -> Location:
    """A server ``url`` or a local ``path`` (exactly one) holding ``collection``."""
    if (url is None) == (path is None):
        raise EmbedtuneError("give either url (a Qdrant server) or path (Qdrant's local mode), not both or neither")
    if url is not None:
        return Location(collection, url=url if "://" in url else f"http://{url}")
    return Location(collection, path=Path(path).expanduser().resolve())


class QdrantCollection:
    """An exported index's collection: its manifest, its nearest-neighbour search and its documents."""

    def __init__(self, where: Location, client, manifest: Manifest):
        self.where, self.client, self.manifest = where, client, manifest

    @classmethod
    def open(cls, uri: str) -> QdrantCollection:
        """Open the collection at ``uri``; one without an embedtune manifest is refused."""
        where = parse_uri(uri)
        client = where.client()
        try:
            if not client.collection_exists(where.collection):
                raise EmbedtuneError(f"{uri}: no such Qdrant collection (write one with 'index export')")
            metadata = client.get_collection(where.collection).config.metadata or {}
            if MANIFEST_KEY not in metadata:
                raise EmbedtuneError(
                    f"{uri}: the collection holds no embedtune manifest (not written by 'index export', or its "
                    "export did not finish); export the index again"
                )
            return cls(where, client, Manifest.from_dict(metadata[MANIFEST_KEY], uri))
        except BaseException:
            client.close()
            raise

    def close(self) -> None:
        self.client.close()

    def points(self, field: str) -> Iterator[tuple[int, object]]:
        """``(point id, payload[field])`` of every point, streamed."""
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.where.collection, limit=4096, offset=offset, with_payload=[field], with_vectors=False
            )
            yield from ((int(p.id), p.payload[field]) for p in points)
            if offset is None:
                return

    def lookup(self, fids: Iterable[int]) -> dict[int, StoredDoc]:
        points = self.client.retrieve(self.where.collection, ids=[int(f) for f in fids], with_payload=True)
        return {
            int(p.id): StoredDoc(int(p.id), p.payload["doc_id"], p.payload["text"], p.payload.get("metadata") or {})
            for p in points
        }

    def search(self, vectors: np.ndarray, k: int, ef_search: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, point ids; -1 pads) per query vector; ``ef_search`` is Qdrant's ``hnsw_ef``."""
        from qdrant_client import models

        params = models.SearchParams(hnsw_ef=ef_search) if ef_search is not None else None
        scores = np.full((len(vectors), k), -np.inf, dtype=np.float32)
        ids = np.full((len(vectors), k), -1, dtype=np.int64)
        for start in range(0, len(vectors), QUERY_BATCH):
            requests = [
                models.QueryRequest(query=v.tolist(), limit=k, params=params, with_payload=False)
                for v in vectors[start : start + QUERY_BATCH]
            ]
            for row, response in enumerate(self.client.query_batch_points(self.where.collection, requests=requests)):
                for col, point in enumerate(response.points[:k]):
                    scores[start + row, col], ids[start + row, col] = point.score, int(point.id)
        return scores, ids
