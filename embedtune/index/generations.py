"""The write transaction of an index: a new generation of data files, published by one rename.

Writes never touch a file the manifest names. A build or update writes generation G+1 beside G and
commits by atomically replacing ``manifest.json``; only then are G's files deleted. A crash or kill
at any moment therefore leaves either the old or the new index, complete. A new index is written
to a temporary directory that is renamed into place. One writer per index holds an exclusive lock,
so two concurrent updates cannot lose one another's changes.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from embedtune.errors import EmbedtuneError
from embedtune.index.lexical import lexical_file
from embedtune.index.manifest import MANIFEST_FILE, Manifest, index_file, now, store_file
from embedtune.index.types import set_search_defaults
from embedtune.io import exclusive_lock, file_sha256, file_xxh3, fsync_path, make_temp_dir, sampled_xxh3, writing

LOCK_FILE = ".lock"
_DATA_FILE = re.compile(
    r"^(index\.\d+\.faiss|docs\.\d+\.sqlite|lexical\.\d+\.npz|index\.faiss|docs\.jsonl)$"
)  # incl. format 1


class Generation:
    """The files of the generation being written, and the commit that publishes them."""

    def __init__(self, directory: Path, generation: int):
        self.dir, self.generation = directory, generation
        self.index_path = directory / index_file(generation)
        self.store_path = directory / store_file(generation)
        self.lexical_path = directory / lexical_file(generation)  # written only for an index with a BM25 side

    def commit(self, manifest: Manifest, faiss_index) -> Manifest:
        """Write the FAISS file (carrying its calibrated search knob), record both files' sizes and hashes,
        then replace the manifest. The BM25 side, when the manifest says the index has one, is recorded too."""
        import faiss

        set_search_defaults(faiss_index, manifest.index_type, manifest.search_defaults)
        # Through a Python file, not FAISS's own: FAISS only prints a failed final flush (a full disk)
        # to stderr, which would commit a truncated file; Python raises it.
        with self.index_path.open("wb") as f:
            faiss.write_index(faiss_index, faiss.PyCallbackIOWriter(f.write))
        paths = (self.index_path, self.store_path) + ((self.lexical_path,) if manifest.lexical else ())
        for path in paths:  # durable before the manifest names them
            fsync_path(path)
        files = {p.name: file_record(p) for p in paths}
        relative = os.path.relpath(manifest.model_path, self.dir) if Path(manifest.model_path).is_absolute() else ""
        manifest = replace(manifest, generation=self.generation, files=files, updated_at=now(), model_relative=relative)
        manifest.write(self.dir)
        fsync_path(self.dir)  # the rename itself
        return manifest


def file_record(path: Path) -> dict[str, object]:
    """What the manifest says of a data file: its size, SHA-256 (``verify``), and the fast digests that
    every load checks (:func:`embedtune.index.index.check_files`)."""
    return {
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "xxh3_128": file_xxh3(path),
        "sampled_xxh3": sampled_xxh3(path),
    }


def writer_lock(directory: Path):
    """One writer per index at a time; a second gets a clear error rather than a lost update."""
    return exclusive_lock(directory / LOCK_FILE, f"{directory}: another embedtune process is updating this index")


@contextmanager
def new_generation(target: Path) -> Iterator[Generation]:
    """A generation to write: in a fresh temporary directory for a new index, else beside the current one.

    On success a new index's directory is renamed into place, and an existing index's files that the
    new manifest does not name are deleted. On failure everything written here is deleted; the
    previous generation was never touched. A full disk or a read-only file system is a one-line error
    naming the index (:func:`embedtune.io.writing`).
    """
    with writing(target):  # a full disk or read-only file system is named as this index, not a temporary
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = make_temp_dir(target)  # also removes the temporaries of killed builds of this name
            try:
                yield Generation(tmp, 1)
                os.rename(tmp, target)  # fails, rather than merging, if the target appeared meanwhile
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return
        with writer_lock(target):
            generation = Generation(target, _current_generation(target) + 1)
            committed = False
            try:
                yield generation
                committed = True
            finally:
                _clean_up(target, generation, committed)


def _current_generation(target: Path) -> int:
    try:
        return Manifest.read(target / MANIFEST_FILE).generation
    except EmbedtuneError:  # replacing an unreadable or old-format index
        return max((int(n) for n in re.findall(r"\.(\d+)\.", " ".join(os.listdir(target)))), default=0)


def _clean_up(target: Path, generation: Generation, committed: bool) -> None:
    """After a commit, the data files the manifest no longer names; after a failure, the new generation's."""
    keep = set(Manifest.read(target / MANIFEST_FILE).files) if committed else set()
    for name in os.listdir(target):
        written = name in (generation.index_path.name, generation.store_path.name, generation.lexical_path.name)
        if (committed and _DATA_FILE.match(name) and name not in keep) or (not committed and written):
            (target / name).unlink(missing_ok=True)
