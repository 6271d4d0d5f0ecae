"""A disk cache of encoded texts, so a text already encoded by the same model, the same way, never is again.

Index builds, evaluations and mining encode the same corpus over and over (a rebuild with another
index type, an evaluation per experiment, mining before each training run). The cache keeps each
text's vector under two keys:

* the *vector space*: a hash of everything that changes the vectors — the loaded model's weights,
  module settings (pooling, token limit) and tokenizer, the precision, the device type and the
  prompt — computed by :class:`embedtune.encoding.Encoder`; one SQLite file per space;
* the SHA-256 of the text, within that file.

Vectors are stored as the float32 the encoder returned, so a hit is bit-identical to the vector it
replaces. Files are SQLite in WAL mode: any number of processes (a corpus encoded in shards) may
read and write one space at once; a writer waits for another's transaction rather than failing.
Nothing is ever evicted: deleting the folder (or one space's file) at any time is safe.
"""

from __future__ import annotations

import json
import os
import sqlite3
import warnings
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedtune.errors import EmbedtuneWarning
from embedtune.io import sqlite_chunks

CACHE_ENV = "EMBEDTUNE_CACHE"
_BUSY_MS = 120_000  # how long a writer waits for another process's transaction


def default_cache_dir() -> Path:
    """``$EMBEDTUNE_CACHE``, else ``$XDG_CACHE_HOME/embedtune/encodings``, else ``~/.cache/embedtune/encodings``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "embedtune" / "encodings"


# The SQLite files of one space: the database and, in WAL mode, its log and shared-memory index.
_SUFFIXES = ("", "-wal", "-shm")


@dataclass(frozen=True)
class CachedSpace:
    """One vector space in the cache, as ``embedtune cache info`` shows it."""

    path: Path
    texts: int
    disk_bytes: int  # the database with its WAL files
    modified: float  # the newest file's mtime (seconds since the epoch)
    description: dict  # what made its vectors: model fingerprint and source, precision, device, prompt


class EncodingCache:
    """Vectors by (vector space, text SHA-256) in one folder of SQLite files, safe for concurrent processes."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser()
        self._connections: dict[str, sqlite3.Connection] = {}

    @classmethod
    def resolve(cls, cache: CacheOption) -> EncodingCache | None:
        """Turn a ``cache`` argument into a cache: True = :func:`default_cache_dir`, None/False = none."""
        if cache is None or cache is False:
            return None
        if isinstance(cache, EncodingCache):
            return cache
        return cls(default_cache_dir() if cache is True else Path(cache))

    def path(self, space: str) -> Path:
        return self.directory / f"{space[:32]}.sqlite"

    def _connect(self, space: str, description: dict) -> sqlite3.Connection:
        conn = self._connections.get(space)
        if conn is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path(space), timeout=_BUSY_MS / 1000, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash may lose the last commits, never corrupt
            with conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS vectors (text_sha256 BLOB PRIMARY KEY, vector BLOB NOT NULL) "
                    "WITHOUT ROWID"
                )
                conn.execute("CREATE TABLE IF NOT EXISTS space (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.executemany(
                    "INSERT OR IGNORE INTO space (key, value) VALUES (?, ?)",
                    [("space", space), *((k, json.dumps(v)) for k, v in description.items())],
                )
            self._connections[space] = conn
        return conn

    def get(self, space: str, description: dict, keys: Sequence[bytes], dimension: int) -> dict[bytes, np.ndarray]:
        """The cached vectors of those ``keys`` (text SHA-256 digests) that are in ``space``."""
        conn = self._connect(space, description)
        found: dict[bytes, np.ndarray] = {}
        for chunk in sqlite_chunks(list(keys)):
            sql = f"SELECT text_sha256, vector FROM vectors WHERE text_sha256 IN ({','.join('?' * len(chunk))})"
            for key, blob in conn.execute(sql, chunk):
                vector = np.frombuffer(blob, dtype=np.float32)
                if len(vector) == dimension:  # anything else is not ours: ignore it, it will be re-encoded
                    found[key] = vector
        return found

    def put(self, space: str, description: dict, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store vectors (float32, one row per key) in one transaction; keys already present are kept."""
        conn = self._connect(space, description)
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        with conn:
            conn.executemany(
                "INSERT OR IGNORE INTO vectors (text_sha256, vector) VALUES (?, ?)",
                ((key, row.tobytes()) for key, row in zip(keys, rows, strict=True)),
            )

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def _files(self, database: Path) -> list[Path]:
        return [f for f in (database.with_name(database.name + suffix) for suffix in _SUFFIXES) if f.exists()]

    def spaces(self) -> list[CachedSpace]:
        """Every vector space in the folder, newest first (an empty list when there is no folder).

        A ``.sqlite`` file that is not a space of ours (not SQLite, without the cache's tables, or with
        a description that is not JSON) is skipped with a warning: one stray file must not hide the
        others. :meth:`clear` still deletes it.
        """
        found = []
        for database in self.directory.glob("*.sqlite"):
            try:
                found.append(self._space(database))
            except (sqlite3.Error, OSError, ValueError) as e:  # ValueError: JSON, or files gone meanwhile
                warnings.warn(
                    f"encoding cache file {database} is not a readable vector space ({e}); skipped",
                    EmbedtuneWarning,
                    stacklevel=2,
                )
        return sorted(found, key=lambda space: space.modified, reverse=True)

    def _space(self, database: Path) -> CachedSpace:
        """The space stored in ``database``; raises if the file is not one of the cache's."""
        files = self._files(database)
        with closing(sqlite3.connect(database, timeout=_BUSY_MS / 1000)) as conn:
            texts = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            rows = conn.execute("SELECT key, value FROM space WHERE key != 'space'").fetchall()
        description = {key: json.loads(value) for key, value in rows}
        stats = [f.stat() for f in files]
        return CachedSpace(
            database, texts, sum(st.st_size for st in stats), max(st.st_mtime for st in stats), description
        )

    def clear(self) -> tuple[int, int]:
        """Delete every space's files; returns (spaces, bytes) deleted. A process encoding meanwhile
        keeps its open file until it ends, and a later one starts afresh: never a wrong vector."""
        self.close()
        spaces = freed = 0
        for database in self.directory.glob("*.sqlite"):
            for f in self._files(database):
                freed += f.stat().st_size
                f.unlink(missing_ok=True)
            spaces += 1
        return spaces, freed


# What callers pass as ``cache``: True = the default folder, a path = that folder, None/False = no cache.
CacheOption = bool | str | Path | EncodingCache | None


def warn_unusable(cache: EncodingCache, error: Exception) -> None:
    """A cache that cannot be opened or written (read-only home, full disk) must not stop the work."""
    warnings.warn(
        f"encoding cache {cache.directory} is unusable ({error}); encoding without it",
        EmbedtuneWarning,
        stacklevel=3,
    )
