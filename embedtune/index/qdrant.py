"""Qdrant collections holding exported indexes: where they live, and reading and searching one.

:func:`embedtune.index.export.export_index` writes an index's live vectors (FAISS id = Qdrant point id), document ids,
texts and metadata to a collection, then, as its commit point, the index manifest into the
collection's metadata: a collection without one (an export that did not finish, or another
program's) is refused when opened, never searched. :class:`QdrantCollection` is what
:meth:`Index.load <embedtune.index.Index.load>` wraps for a ``qdrant://`` URI
(:class:`embedtune.index.index.QdrantIndex`), so :class:`~embedtune.retrieval.Searcher` (and through it
``search``, ``serve`` and ``eval``) serves a collection unchanged, with the same model check: it is
searched only with the model whose fingerprint its manifest records. The URIs:

* ``qdrant:///abs/path?collection=NAME`` — Qdrant's local mode (a folder, no server);
* ``qdrant://host:port/NAME`` — a Qdrant server (``QDRANT_API_KEY`` from the environment).

Vectors are stored with the dot product, which on normalised vectors is the index's own score.
A collection holds no BM25 side: it is read with a manifest that says so (:func:`_dense_only`), so a
bm25 or hybrid search is refused in one line, as for an index built without one. A server that does
not answer, or refuses a call, is one error naming its URL wherever the call is made
(:class:`_ServerClient`), not the HTTP client's traceback. Needs the optional extra ``qdrant``
(``qdrant-client``).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
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
            with warnings.catch_warnings():
                # A server that does not answer is the first call's one-line error; the client's own warning
                # about it (two lines, before that error) says less. A version mismatch is still warned about.
                warnings.filterwarnings("ignore", "Failed to obtain server version", UserWarning)
                client = QdrantClient(url=self.url, api_key=os.environ.get("QDRANT_API_KEY"))
            return _ServerClient(client, self.url)
        except (RuntimeError, OSError, ValueError) as e:  # local mode: a folder another client holds
            raise EmbedtuneError(f"{self.uri}: cannot open Qdrant ({e})") from e


class _ServerClient:
    """A Qdrant server's client whose every call turns the server's silence or refusal into an
    :class:`EmbedtuneError` naming its URL and what to do: the calls are made in many places (export,
    open, scroll, search), and without this each would end in qdrant-client's (httpx's) traceback."""

    def __init__(self, client: Any, url: str):
        self._client, self._url = client, url

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        return functools.partial(self._call, attribute) if callable(attribute) else attribute

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            return method(*args, **kwargs)
        except ResponseHandlingException as e:  # no HTTP answer: refused, unreachable, timed out
            reason = str(e.source) or type(e.source).__name__
            raise EmbedtuneError(f"{self._url}: Qdrant does not answer ({reason}); start it or check the url") from e
        except UnexpectedResponse as e:  # an answer, but an HTTP error: its body says why
            said = e.content.decode("utf-8", "replace").replace("\n", " ").strip()[:300]
            why = f"{e.status_code} {e.reason_phrase}".strip() + (f": {said}" if said else "")
            advice = "; set QDRANT_API_KEY to its key" if e.status_code in (401, 403) else ""
            raise EmbedtuneError(f"{self._url}: Qdrant refused the request ({why}){advice}") from e


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


def _dense_only(manifest: Manifest) -> Manifest:
    """The manifest of a collection: the exported index's, less its BM25 side, which the collection does
    not hold (no ``lexical``, and dense as the default mode if calibration chose another), so that a bm25
    or hybrid search is refused before it looks for that side. Done on reading rather than at export so
    that collections exported before this are read right too."""
    calibration = dict(manifest.query_calibration)
    if calibration.get("default_mode", "dense") != "dense":
        calibration["default_mode"] = "dense"
    return replace(manifest, lexical={}, query_calibration=calibration)


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
            return cls(where, client, _dense_only(Manifest.from_dict(metadata[MANIFEST_KEY], uri)))
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
