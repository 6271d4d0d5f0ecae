"""Files on disk: write-then-rename (a crash never leaves a half-written model, index or file),
fsync, content hashes that tie outputs to their inputs, and SQLite's variable limit.

Every module that writes an output goes through here, so atomicity and durability are decided once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from embedtune.errors import OutputExistsError

T = TypeVar("T")
_READ_CHUNK = 1 << 20  # stream files: model weights can be GBs
SQLITE_MAX_VARIABLES = 900  # keys per "IN (...)" query, under SQLite's oldest limit of 999 variables


def check_destination(target: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output unless asked to; call before the expensive work."""
    if target.exists() and not overwrite:
        raise OutputExistsError(target)


@contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; on success move it to ``target``.

    The temporary directory lives in the same parent so the final ``rename`` is atomic. If the body
    raises (or the process is killed), ``target`` is untouched: an old version stays fully usable.
    Replacing an existing directory is two renames; in the instant between them ``target`` is absent,
    never partial.
    """
    target = Path(target)
    check_destination(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success rename it over ``path``.

    Readers never see half a file, and a failed write leaves any previous ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a small file via :func:`atomic_file`, synced to disk before the name points at it."""
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries (a rename in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def update_from_file(digest: Any, path: Path) -> None:
    """Feed a file's bytes into ``digest`` without loading the whole file."""
    with Path(path).open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_from_file(digest, path)
    return digest.hexdigest()


def sqlite_chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in slices small enough for one SQLite ``IN (...)`` query."""
    for start in range(0, len(items), SQLITE_MAX_VARIABLES):
        yield items[start : start + SQLITE_MAX_VARIABLES]
