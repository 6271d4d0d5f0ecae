"""The indexes a service answers from: loaded once with their models, swapped for newer generations.

``embedtune index add/remove`` never changes files a manifest names: it writes generation G+1 and
replaces the manifest (:mod:`embedtune.index.generations`). The registry watches each index's
manifest (its inode, size and modification time, checked every ``poll_seconds`` on a thread of its
own), loads a new generation completely beside the one in use, and then swaps one reference.

Failures designed out:

* **Requests failing during an update.** A batch holds the searcher it started with; the files of
  the old generation stay readable to it after the writer deletes them (open file handles and
  mappings outlive the name), and it is dropped only when no request uses it.
* **Loading the model per update.** An update keeps the model, so the new index is served by the
  loaded encoder (:meth:`~embedtune.retrieval.Searcher.with_index`); only an index rebuilt by another
  model loads one.
* **A bad update taking the service down.** A generation that fails to load (damaged, another
  format) is logged and kept out; the previous one goes on serving and ``/health`` names the error.
* **Unasked-for indexes.** Only the indexes named at start are served; a request names one of them
  or gets a 404, so a request can never open a path of its choosing.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from embedtune.errors import EmbedtuneError
from embedtune.index import DEFAULT_INDEXES_DIR, MANIFEST_FILE, Index, Manifest
from embedtune.retrieval import Reranker, Searcher

log = logging.getLogger("embedtune.serve")


@dataclass
class Served:
    """One index as served now: its searcher (index + encoder) and the last load error, if any."""

    searcher: Searcher
    stamp: tuple[int, int, int]  # the manifest's (inode, size, mtime_ns) when last looked at
    error: str | None = None

    @property
    def manifest(self) -> Manifest:
        return self.searcher.index.manifest


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path / MANIFEST_FILE)
    return st.st_ino, st.st_size, st.st_mtime_ns


def load_searcher(
    index: Index, backend: str, model: str | Path | None = None, reranker: Reranker | None = None
) -> Searcher:
    """A searcher over ``index`` in every mode it has (dense; bm25 and hybrid with a BM25 side), with the
    query encoder ``backend`` asks for (:func:`~embedtune.encoding.make_encoder`: ``auto`` = OpenVINO
    when installed; a conversion that fails its check falls back to PyTorch with a warning) and the
    service's ``reranker``. Which backend encodes goes to the log."""
    found = Searcher(index, model, backend=backend, reranker=reranker)
    if backend == "auto" and importlib.util.find_spec("openvino") is None:
        log.info("index %s: openvino is not installed", index.name)
    log.info("index %s: encoding queries with %s", index.name, found.encoder.backend)
    return found


class IndexRegistry:
    """The served indexes by name (the first is the default), kept at their newest generation."""

    def __init__(
        self,
        indexes: list[str | Path] | tuple[str | Path, ...],
        indexes_dir: Path = DEFAULT_INDEXES_DIR,
        *,
        backend: str = "auto",
        model: str | Path | None = None,
        reranker: Reranker | None = None,
        poll_seconds: float = 1.0,
    ):
        if not indexes:
            raise EmbedtuneError("no index to serve: name at least one")
        self.poll_seconds = poll_seconds
        self._load = functools.partial(load_searcher, backend=backend, model=model, reranker=reranker)
        self._served: dict[str, Served] = {}
        for name in indexes:
            index = Index.load(name, indexes_dir)
            if index.name in self._served:
                raise EmbedtuneError(f"index '{index.name}' is named twice")
            self._served[index.name] = Served(self._load(index), _stamp(index.path))
        self.default = next(iter(self._served))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def names(self) -> list[str]:
        return list(self._served)

    def get(self, name: str | None) -> Served | None:
        """The served index ``name`` (None: the default one), or None when it is not served."""
        return self._served.get(self.default if name is None else name)

    def refresh(self) -> list[str]:
        """Load each index whose manifest changed to a new generation and swap it in; the names swapped."""
        swapped = []
        for name, served in list(self._served.items()):
            path = served.searcher.index.path
            try:
                stamp = _stamp(path)
                if stamp == served.stamp:
                    continue
                manifest = Manifest.read(path / MANIFEST_FILE)
                if manifest.generation == served.manifest.generation:
                    served.stamp = stamp
                    continue
                index = Index.load(path)
                try:
                    searcher = served.searcher.with_index(index)
                except EmbedtuneError:  # rebuilt with another model: that model is loaded (seconds)
                    searcher = self._load(index)
            except (OSError, EmbedtuneError) as e:
                if served.error != str(e):
                    log.warning("index %s: keeping generation %d: %s", name, served.manifest.generation, e)
                served.error = str(e)
                continue
            self._served[name] = Served(searcher, stamp)
            swapped.append(name)
            log.info("index %s: now serving generation %d (%d documents)", name, index.manifest.generation, len(index))
        return swapped

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="embedtune-index-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # never let the watcher die silently: the next poll tries again
                log.exception("checking the indexes for updates failed")
