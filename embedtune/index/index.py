"""Reading an index: find it by name or path, load and cross-check its files, list and describe indexes.

A load checks that the manifest, the FAISS file and the document store agree (file sizes, vector
count, dimension, document count) and that neither file changed since it was written: a fast
digest of the whole file (xxh3) for files up to ``FULL_CHECK_BYTES``, of evenly spaced blocks for
larger ones, whose full read would cost more than the load itself; ``verify`` also checks the
SHA-256 of both. Random bytes written inside a FAISS file keep its size but not its digest, and
would otherwise be served as hits scored 1e36. As a last line for what sampling misses, a search
that returns a score no normalised vector pair can have is refused. So a damaged or half-copied
index is an error at load time, not a wrong answer later. A model is accepted for an index only
when its content fingerprint equals the one that built it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedtune.errors import EmbedtuneError, error_line
from embedtune.index.lexical import LexicalIndex, lexical_file
from embedtune.index.manifest import DEFAULT_INDEXES_DIR, MANIFEST_FILE, Manifest, index_file, store_file
from embedtune.index.store import DocStore, StoredDoc
from embedtune.index.types import knob_name, search_parameters
from embedtune.io import file_sha256, file_xxh3, sampled_xxh3
from embedtune.models import model_fingerprint, resolve_model_path

FULL_CHECK_BYTES = 1 << 30  # files up to 1 GiB are hashed whole on every load (xxh3 reads GB/s)
MAX_SCORE = 1.5  # inner products of unit vectors are <= 1; quantised codes overshoot by far less


def resolve_index_path(index: str | Path, indexes_dir: Path = DEFAULT_INDEXES_DIR) -> Path:
    """An index given by name (``indexes_dir/NAME``) or by path; it must exist."""
    candidates = [Path(index)] if Path(index).is_absolute() else [Path(indexes_dir) / index, Path(index)]
    for candidate in candidates:
        if (candidate / MANIFEST_FILE).is_file():
            return candidate
    available = [name for name, _ in list_indexes(indexes_dir)]
    hint = f"; available: {', '.join(available)}" if available else f"; {indexes_dir} has no indexes"
    raise EmbedtuneError(f"no index '{index}' (looked in {candidates[0]}){hint}")


def list_indexes(indexes_dir: Path = DEFAULT_INDEXES_DIR) -> list[tuple[str, Manifest | EmbedtuneError]]:
    """``(name, manifest)`` for each index folder, or ``(name, error)`` where the manifest is unreadable."""
    found: list[tuple[str, Manifest | EmbedtuneError]] = []
    for path in sorted(Path(indexes_dir).glob(f"*/{MANIFEST_FILE}")):
        if path.parent.name.startswith("."):
            continue  # a build's temporary directory
        try:
            found.append((path.parent.name, Manifest.read(path)))
        except EmbedtuneError as e:
            found.append((path.parent.name, e))
    return found


def check_model(manifest: Manifest, model: str | Path | None, name: str, index_dir: Path | None = None) -> Path:
    """The path of ``model`` (default: the manifest's), after proving it is the model that built the index.

    When the manifest's model folder is gone and the index is in ``index_dir``, the model is looked for
    where it sat relative to the index (both copied to another machine, or moved together)."""
    if model is None and index_dir is not None and manifest.model_relative and not Path(manifest.model_path).exists():
        moved = Path(index_dir) / manifest.model_relative
        model = moved if moved.exists() else None
    path = resolve_model_path(model if model is not None else manifest.model_path)
    fingerprint = model_fingerprint(path)
    if fingerprint != manifest.model_fingerprint:
        raise EmbedtuneError(
            f"index '{name}' was built by the model at {manifest.model_path} "
            f"(fingerprint {manifest.model_fingerprint[:12]}), but {path} has fingerprint "
            f"{fingerprint[:12]}; its vectors are not comparable: rebuild the index with this model"
        )
    return path


class Index:
    """A loaded index as every consumer reads it: manifest, documents, the model check, vector search, BM25 side.

    :meth:`load` opens a :class:`FaissIndex` (an index folder: FAISS vectors, SQLite documents) or, for
    a ``qdrant://`` URI, a :class:`QdrantIndex` (an exported collection); both answer the same calls.
    """

    no_bm25 = "it was built without bm25; search it in dense mode, or rebuild it with bm25"  # why not, and what to do

    def __init__(self, path: Path, manifest: Manifest):
        self.path, self.manifest = path, manifest
        self._lexical: LexicalIndex | None = None

    @classmethod
    def load(
        cls, index: str | Path, indexes_dir: Path = DEFAULT_INDEXES_DIR, *, mmap: bool = True, verify: bool = False
    ) -> Index:
        """Load and cross-check manifest, FAISS file and store; a mismatch is an error, not a wrong answer later.

        ``mmap`` maps the FAISS file instead of reading it (pages load on demand, shared between
        processes). ``verify`` also checks both files' SHA-256 against the manifest (reads them fully).
        A ``qdrant://`` URI opens an exported collection instead (:mod:`embedtune.index.qdrant`).
        """
        from embedtune.index.qdrant import QdrantCollection, is_qdrant_uri

        if is_qdrant_uri(index):
            return QdrantIndex(QdrantCollection.open(str(index)))
        path = resolve_index_path(index, indexes_dir)
        manifest = Manifest.read(path / MANIFEST_FILE)
        try:
            return FaissIndex.open(path, manifest, mmap, verify)
        except EmbedtuneError:
            # A writer may have committed a new generation and deleted these files since we read the
            # manifest: then retry once with the new one; otherwise the files really are damaged.
            newer = Manifest.read(path / MANIFEST_FILE)
            if newer.generation == manifest.generation:
                raise
            return FaissIndex.open(path, newer, mmap, verify)

    @property
    def name(self) -> str:
        return self.path.name

    def __len__(self) -> int:
        return self.manifest.count

    @property
    def has_bm25(self) -> bool:
        return bool(self.manifest.lexical)

    @property
    def lexical(self) -> LexicalIndex:
        """The BM25 side (loaded on first use; its file was checked with the others at load time)."""
        if not self.has_bm25:
            raise EmbedtuneError(f"index '{self.name}' has no BM25 side: {self.no_bm25}")
        if self._lexical is None:
            self._lexical = LexicalIndex.load(self.path / lexical_file(self.manifest.generation))
        return self._lexical

    def check_model(self, model: str | Path | None) -> Path:
        """Return the model path after proving it is the one that built this index."""
        return check_model(self.manifest, model, self.name, self.path if self.path.is_dir() else None)

    # What each kind of index implements.
    faiss_index: Any  # the FAISS index object (a Qdrant collection has none: reading it is an error)

    def close(self) -> None:
        raise NotImplementedError

    @property
    def doc_ids(self) -> list[str]:
        """All document ids in id order."""
        raise NotImplementedError

    @property
    def texts(self) -> list[str]:
        """All texts in id order. Loads every text: prefer :meth:`lookup` for search results."""
        raise NotImplementedError

    def lookup(self, fids: Iterable[int]) -> dict[int, StoredDoc]:
        raise NotImplementedError

    def row_map(self, doc_ids: Sequence[str]) -> np.ndarray:
        """Id -> position of that document in ``doc_ids`` (-1 where absent): search results read as rows
        of a corpus a caller holds as a list (a retriever, a miner)."""
        raise NotImplementedError

    def search_vectors(
        self, vectors: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids; -1 pads) per query vector; ``k`` is capped at the index size.

        ``nprobe`` (IVF types) and ``ef_search`` (HNSW) override the calibrated defaults.
        """
        raise NotImplementedError


class FaissIndex(Index):
    """An index folder: the FAISS vectors (memory-mapped where FAISS allows), the document store and manifest."""

    def __init__(self, path: Path, manifest: Manifest, faiss_index, store: DocStore):
        super().__init__(path, manifest)
        self.faiss_index, self.store = faiss_index, store
        tombstones = store.tombstones()
        self._selector = None
        if tombstones:
            import faiss

            self._batch = faiss.IDSelectorBatch(np.asarray(tombstones, dtype=np.int64))
            self._selector = faiss.IDSelectorNot(self._batch)  # keeps a reference: FAISS does not own it

    @classmethod
    def open(cls, path: Path, manifest: Manifest, mmap: bool, verify: bool) -> FaissIndex:
        _check_files(path, manifest, verify)
        faiss_index = _read_faiss(path / index_file(manifest.generation), mmap)
        store = DocStore(path / store_file(manifest.generation))
        stored = len(store)
        if (
            not (faiss_index.ntotal == manifest.vectors and stored == manifest.count)
            or faiss_index.d != manifest.dimension
        ):
            store.close()
            raise EmbedtuneError(
                f"{path}: index files disagree (manifest: {manifest.count} documents, {manifest.vectors} x "
                f"{manifest.dimension} vectors; FAISS: {faiss_index.ntotal} x {faiss_index.d}; store: {stored} "
                "documents); rebuild it"
            )
        return cls(path, manifest, faiss_index, store)

    def close(self) -> None:
        self.store.close()

    @property
    def doc_ids(self) -> list[str]:
        """All document ids in FAISS-id order (read from the store on each access: slow for large indexes)."""
        return list(self.store.iter_column("doc_id"))

    @property
    def texts(self) -> list[str]:
        """All texts in FAISS-id order. Loads every text: prefer :meth:`lookup` for search results."""
        return list(self.store.iter_column("text"))

    def lookup(self, fids: Iterable[int]) -> dict[int, StoredDoc]:
        return self.store.lookup(fids)

    def search_vectors(
        self, vectors: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, FAISS ids; -1 pads) per query vector; ``k`` is capped at the index size.

        ``nprobe`` (IVF types) and ``ef_search`` (HNSW) override the calibrated defaults.
        """
        if k <= 0:
            raise EmbedtuneError(f"k must be positive, got {k}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.manifest.dimension:
            raise EmbedtuneError(
                f"query vectors have shape {vectors.shape}, the index needs (n, {self.manifest.dimension})"
            )
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(vectors), 0), dtype=np.float32), np.zeros((len(vectors), 0), dtype=np.int64)
        params = search_parameters(self.manifest.index_type, self._knobs(nprobe, ef_search), self._selector)
        scores, fids = self.faiss_index.search(vectors, k, params=params)
        self._check_scores(scores, fids)
        return scores, fids

    def _check_scores(self, scores: np.ndarray, fids: np.ndarray) -> None:
        """Refuse results no intact index of unit vectors can give (damage the load checks missed)."""
        found = scores[fids >= 0]
        if found.size and not (np.isfinite(found).all() and np.abs(found).max() <= MAX_SCORE):
            worst = found[~np.isfinite(found)][0] if not np.isfinite(found).all() else np.abs(found).max()
            raise EmbedtuneError(
                f"{self.path}: search returned the score {worst:.3g}, impossible for normalised vectors: "
                "the FAISS file is damaged; rebuild the index"
            )

    def _knobs(self, nprobe: int | None, ef_search: int | None) -> dict[str, int]:
        """The calibrated search knobs, overridden by those given (which must suit the index type)."""
        knobs = dict(self.manifest.search_defaults)
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is None:
                continue
            if knob_name(self.manifest.index_type) != name:
                raise EmbedtuneError(f"{name} does not apply to a {self.manifest.index_type} index")
            if value < 1:
                raise EmbedtuneError(f"{name} must be positive, got {value}")
            knobs[name] = value
        return knobs

    def row_map(self, doc_ids: Sequence[str]) -> np.ndarray:
        """FAISS id -> position of that document in ``doc_ids`` (-1 where absent).

        Lets a caller that holds a corpus as a list (a retriever, a miner) read search results as rows
        of that list. Streams the stored ids once.
        """
        position = {doc_id: row for row, doc_id in enumerate(doc_ids)}
        rows = np.full(max(self.store.next_fid(), 1), -1, dtype=np.int64)
        for fid, doc_id in self.store.iter_ids():
            rows[fid] = position.get(doc_id, -1)
        return rows


class QdrantIndex(Index):
    """An index exported to Qdrant (:mod:`embedtune.index.qdrant`): the same manifest, model check and
    search API, with the vectors and documents in the collection instead of FAISS and SQLite."""

    no_bm25 = "a Qdrant collection holds the vectors only; search it in dense mode"

    def __init__(self, collection):
        super().__init__(Path(collection.where.uri), collection.manifest)  # the path: for messages only
        self.collection = collection

    @property
    def name(self) -> str:
        return f"qdrant:{self.collection.where.collection}"

    @property
    def faiss_index(self):
        raise EmbedtuneError(f"index '{self.name}' is a Qdrant collection: it has no FAISS vectors to read back")

    def close(self) -> None:
        self.collection.close()

    @property
    def doc_ids(self) -> list[str]:
        return [doc_id for _, doc_id in sorted(self.collection.points("doc_id"))]

    @property
    def texts(self) -> list[str]:
        return [text for _, text in sorted(self.collection.points("text"))]

    def lookup(self, fids: Iterable[int]) -> dict[int, StoredDoc]:
        return self.collection.lookup(fids)

    def row_map(self, doc_ids: Sequence[str]) -> np.ndarray:
        position = {doc_id: row for row, doc_id in enumerate(doc_ids)}
        pairs = [(fid, position.get(doc_id, -1)) for fid, doc_id in self.collection.points("doc_id")]
        rows = np.full(max((fid for fid, _ in pairs), default=0) + 1, -1, dtype=np.int64)
        for fid, row in pairs:
            rows[fid] = row
        return rows

    def search_vectors(
        self, vectors: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids; -1 pads) from Qdrant; ``ef_search`` is its ``hnsw_ef`` (default: Qdrant's)."""
        if k <= 0:
            raise EmbedtuneError(f"k must be positive, got {k}")
        if nprobe is not None:
            raise EmbedtuneError("nprobe does not apply to a Qdrant collection (its knob is ef_search)")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.manifest.dimension:
            raise EmbedtuneError(f"query vectors must be n x {self.manifest.dimension}, got {vectors.shape}")
        return self.collection.search(vectors, min(k, len(self)), ef_search)


def _check_files(path: Path, manifest: Manifest, verify: bool) -> None:
    """Both data files the manifest names exist with its sizes and digests (with ``verify``, SHA-256 too)."""
    expected = {index_file(manifest.generation), store_file(manifest.generation)}
    expected |= {lexical_file(manifest.generation)} if manifest.lexical else set()
    if set(manifest.files) != expected:
        raise EmbedtuneError(f"{path}: manifest names files {sorted(manifest.files)}, expected {sorted(expected)}")
    for name, info in sorted(manifest.files.items()):
        file = path / name
        if not file.is_file():
            raise EmbedtuneError(f"{path}: index is incomplete (no {name}); rebuild it")
        size = file.stat().st_size
        if size != info["bytes"]:
            what = f"is {size} bytes, the manifest says {info['bytes']}"
        elif verify and file_sha256(file) != info["sha256"]:
            what = "SHA-256 differs"
        else:
            what = _digest_mismatch(file, size, info)
        if what:
            raise EmbedtuneError(
                f"{file}: does not match the manifest ({what}): damaged or changed outside embedtune; rebuild it"
            )


def _digest_mismatch(file: Path, size: int, info: dict) -> str | None:
    """The load-time check: the whole file's xxh3 when small enough, else sampled blocks'.

    Manifests written before these digests existed fall back to SHA-256 for small files.
    """
    if size <= FULL_CHECK_BYTES:
        if "xxh3_128" in info:
            return "checksum differs" if file_xxh3(file) != info["xxh3_128"] else None
        return "SHA-256 differs" if file_sha256(file) != info["sha256"] else None
    if "sampled_xxh3" in info and sampled_xxh3(file) != info["sampled_xxh3"]:
        return "checksum of sampled blocks differs"
    return None


def _read_faiss(file: Path, mmap: bool):
    import faiss

    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        return faiss.read_index(str(file), flags)
    except RuntimeError as e:
        raise EmbedtuneError(f"{file}: unreadable FAISS index ({error_line(e, last=True)})") from e
