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
from pathlib import Path

import numpy as np

from embedtune.errors import EmbedtuneWarning

CACHE_ENV = "EMBEDTUNE_CACHE"
_CHUNK = 900  # keys per "IN (...)" query, under SQLite's oldest limit of 999 variables
_BUSY_MS = 120_000  # how long a writer waits for another process's transaction


def default_cache_dir() -> Path:
    """``$EMBEDTUNE_CACHE``, else ``$XDG_CACHE_HOME/embedtune/encodings``, else ``~/.cache/embedtune/encodings``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "embedtune" / "encodings"


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
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start : start + _CHUNK])
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


# What callers pass as ``cache``: True = the default folder, a path = that folder, None/False = no cache.
CacheOption = bool | str | Path | EncodingCache | None


def warn_unusable(cache: EncodingCache, error: Exception) -> None:
    """A cache that cannot be opened or written (read-only home, full disk) must not stop the work."""
    warnings.warn(
        f"encoding cache {cache.directory} is unusable ({error}); encoding without it",
        EmbedtuneWarning,
        stacklevel=3,
    )
