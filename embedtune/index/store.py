"""The document store beside an index's vectors: ids, texts, text hashes and metadata in SQLite.

Row ``fid`` of table ``docs`` is the document's FAISS id, so a search result is looked up with one
indexed query and a million-document index never loads its texts into memory. A store file is
never changed once an index refers to it: an update copies it, changes the copy and commits both
index files together by replacing the manifest (see :mod:`embedtune.index.generations`), which is why readers
open it ``immutable`` (no locks, no journal).

``tombstones`` holds the FAISS ids of removed documents whose vectors cannot be deleted from the
FAISS index (HNSW graphs); searches filter them out.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from embedtune.errors import EmbedtuneError
from embedtune.io import sqlite_chunks

_SCHEMA = """
CREATE TABLE docs (
    fid INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    metadata TEXT
);
CREATE TABLE tombstones (fid INTEGER PRIMARY KEY);
"""


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredDoc:
    fid: int
    doc_id: str
    text: str
    metadata: dict = field(default_factory=dict)


class DocStore:
    """One SQLite file of documents keyed by FAISS id; read-only unless opened with ``writable``."""

    def __init__(self, path: Path, *, writable: bool = False, create: bool = False):
        self.path = Path(path)
        if create:
            self.path.unlink(missing_ok=True)
            self.conn = sqlite3.connect(self.path)
            try:
                self.conn.executescript(_SCHEMA)
            except sqlite3.Error:
                self.conn.close()  # a full disk: leave no open file behind (it keeps the space, and the mount busy)
                raise
        elif writable:
            self.conn = sqlite3.connect(self.path)
        else:
            uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
            self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            self.conn.execute("SELECT fid, doc_id, text, text_sha256, metadata FROM docs LIMIT 1")
            self.conn.execute("SELECT fid FROM tombstones LIMIT 1")
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise EmbedtuneError(f"{self.path}: unreadable document store ({e}); rebuild the index") from e

    def close(self) -> None:
        self.conn.close()

    def __len__(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM docs")

    def _scalar(self, sql: str):
        try:
            return self.conn.execute(sql).fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise EmbedtuneError(f"{self.path}: damaged document store ({e}); rebuild the index") from e

    def next_fid(self) -> int:
        """One past the largest FAISS id ever used here (tombstoned ids stay taken)."""
        row = self.conn.execute(
            "SELECT MAX(m) FROM (SELECT MAX(fid) AS m FROM docs UNION ALL SELECT MAX(fid) FROM tombstones)"
        ).fetchone()
        return 0 if row[0] is None else row[0] + 1

    def insert(self, rows: Iterable[tuple[int, str, str, dict]]) -> None:
        """Insert ``(fid, doc_id, text, metadata)`` rows; a repeated ``doc_id`` raises ``sqlite3.IntegrityError``."""
        self.conn.executemany(
            "INSERT INTO docs (fid, doc_id, text, text_sha256, metadata) VALUES (?, ?, ?, ?, ?)",
            (
                (fid, doc_id, text, text_sha256(text), json.dumps(meta) if meta else None)
                for fid, doc_id, text, meta in rows
            ),
        )

    def delete(self, fids: list[int], *, tombstone: bool) -> None:
        for chunk in sqlite_chunks(fids):
            self.conn.execute(f"DELETE FROM docs WHERE fid IN ({_marks(chunk)})", chunk)
        if tombstone:
            self.conn.executemany("INSERT INTO tombstones (fid) VALUES (?)", ((f,) for f in fids))

    def commit(self) -> None:
        self.conn.commit()

    def hashes(self, doc_ids: list[str]) -> dict[str, tuple[int, str]]:
        """``{doc_id: (fid, text_sha256)}`` for those of ``doc_ids`` that are stored."""
        found: dict[str, tuple[int, str]] = {}
        for chunk in sqlite_chunks(doc_ids):
            sql = f"SELECT doc_id, fid, text_sha256 FROM docs WHERE doc_id IN ({_marks(chunk)})"
            found.update((d, (f, h)) for d, f, h in self.conn.execute(sql, chunk))
        return found

    def lookup(self, fids: Iterable[int]) -> dict[int, StoredDoc]:
        """The stored documents of ``fids`` (missing ids are simply absent from the result)."""
        fids = [int(f) for f in fids]
        found: dict[int, StoredDoc] = {}
        try:
            for chunk in sqlite_chunks(fids):
                sql = f"SELECT fid, doc_id, text, metadata FROM docs WHERE fid IN ({_marks(chunk)})"
                for fid, doc_id, text, meta in self.conn.execute(sql, chunk):
                    found[fid] = StoredDoc(fid, doc_id, text, json.loads(meta) if meta else {})
        except (sqlite3.DatabaseError, json.JSONDecodeError) as e:
            raise EmbedtuneError(f"{self.path}: damaged document store ({e}); rebuild the index") from e
        return found

    def iter_column(self, column: str) -> Iterator:
        """One column (``doc_id`` or ``text``) of every document, in FAISS-id order, streamed."""
        if column not in ("doc_id", "text"):
            raise ValueError(column)
        for (value,) in self.conn.execute(f"SELECT {column} FROM docs ORDER BY fid"):
            yield value

    def iter_ids(self) -> Iterator[tuple[int, str]]:
        """``(fid, doc_id)`` of every document, in FAISS-id order, streamed."""
        yield from self.conn.execute("SELECT fid, doc_id FROM docs ORDER BY fid")

    def tombstones(self) -> list[int]:
        try:
            return [f for (f,) in self.conn.execute("SELECT fid FROM tombstones")]
        except sqlite3.DatabaseError as e:
            raise EmbedtuneError(f"{self.path}: damaged document store ({e}); rebuild the index") from e


def _marks(chunk: list) -> str:
    return ",".join("?" * len(chunk))
