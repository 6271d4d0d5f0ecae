"""Building, updating and loading FAISS indexes that remember the model and corpus they were made from.

An index is a directory ``indexes/NAME/`` holding one *generation* of two data files and the
manifest that names them:

* ``index.G.faiss`` — the vectors (type chosen by :mod:`embedtune.ann`), keyed by 64-bit FAISS ids;
* ``docs.G.sqlite`` — ids, texts, text hashes and metadata by FAISS id (:mod:`embedtune.store`);
* ``manifest.json`` — the model (path, content fingerprint, dimension, pooling, normalisation,
  prompts), the corpus, the index type and why it was chosen, calibrated search knobs, and the
  size and SHA-256 of both data files.

Writes never touch a file the manifest names. A build or update writes generation G+1 beside G and
commits by atomically replacing ``manifest.json``; only then are G's files deleted. A crash or kill
at any moment therefore leaves either the old or the new index, complete. A new index is written
to a temporary directory that is renamed into place.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from embedtune import __version__
from embedtune.ann import (
    DEFAULT_TARGET_RECALL,
    INDEX_TYPES,
    IndexSpec,
    calibrate,
    choose_spec,
    create_index,
    knob_name,
    make_spec,
    search_parameters,
    training_sample,
)
from embedtune.data import CorpusRecord, corpus_file, count_lines, iter_corpus
from embedtune.encoding import CacheOption, Encoder, prompt_names
from embedtune.errors import DataError, EmbedtuneError, EmbedtuneWarning
from embedtune.io import check_destination, file_sha256, fsync_path, write_text_atomic
from embedtune.models import load_model, model_fingerprint, resolve_model_path
from embedtune.store import DocStore, StoredDoc, text_sha256

DEFAULT_INDEXES_DIR = Path("indexes")
MANIFEST_FILE = "manifest.json"
FORMAT = 2
_LOCK_FILE = ".lock"
_DATA_FILE = re.compile(r"^(index\.\d+\.faiss|docs\.\d+\.sqlite|index\.faiss|docs\.jsonl)$")  # incl. format 1
_ENCODE_CHUNK = 4096  # documents read, stored and encoded at a time: bounds the texts held in memory
_ADD_CHUNK = 65_536  # vectors added to FAISS at a time (progress bar granularity)


def index_file(generation: int) -> str:
    return f"index.{generation}.faiss"


def store_file(generation: int) -> str:
    return f"docs.{generation}.sqlite"


@dataclass(frozen=True)
class Manifest:
    """What an index is: enough to refuse a mismatched model, to check its files and to rebuild it."""

    name: str
    model_path: str
    model_fingerprint: str
    dimension: int
    normalized: bool
    metric: str
    count: int  # live documents
    max_seq_length: int
    precision: str
    corpus_path: str
    corpus_sha256: str
    embedtune_version: str
    created_at: str
    encode_seconds: float
    format: int = FORMAT
    pooling: str = "unknown"
    prompts: dict[str, str] = field(default_factory=dict)
    query_prompt_name: str | None = None
    document_prompt_name: str | None = None
    index_type: str = "flat"
    index_params: dict[str, int] = field(default_factory=dict)
    choice: str = ""  # why this index type
    train_size: int = 0
    build_seconds: float = 0.0
    search_defaults: dict[str, int] = field(default_factory=dict)  # calibrated nprobe / ef_search
    calibration: dict[str, object] = field(default_factory=dict)
    vectors: int = 0  # FAISS ntotal: live documents plus tombstoned HNSW nodes
    tombstones: int = 0
    generation: int = 1
    files: dict[str, dict[str, object]] = field(default_factory=dict)  # name -> {"bytes", "sha256"}
    updated_at: str = ""
    updates: list[dict[str, object]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise EmbedtuneError(f"{path}: unreadable index manifest ({e})") from None
        if not isinstance(raw, dict):
            raise EmbedtuneError(f"{path}: unreadable index manifest (not a JSON object)")
        if raw.get("format") != FORMAT:
            raise EmbedtuneError(
                f"{path}: index format {raw.get('format', 1)} (this embedtune reads format {FORMAT}); "
                "rebuild it with 'embedtune index build --overwrite'"
            )
        unknown = set(raw) - {f.name for f in fields(cls)}
        try:
            if unknown:
                raise TypeError(f"unknown field(s) {', '.join(sorted(unknown))}")
            return cls(**raw)
        except TypeError as e:
            raise EmbedtuneError(f"{path}: unreadable index manifest ({e})") from None

    def write(self, directory: Path) -> None:
        write_text_atomic(Path(directory) / MANIFEST_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @property
    def spec(self) -> IndexSpec:
        return IndexSpec(self.index_type, **self.index_params)

    @property
    def disk_bytes(self) -> int:
        return sum(int(f["bytes"]) for f in self.files.values())


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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def describe_model(st) -> dict[str, object]:
    """Pooling, prompts and the prompt names used for queries and documents, for the manifest."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    pooling = next((str(m.pooling_mode) for m in st if isinstance(m, Pooling)), "unknown")
    query, document = prompt_names(st)
    return {
        "pooling": pooling,
        "prompts": dict(getattr(st, "prompts", None) or {}),
        "query_prompt_name": query,
        "document_prompt_name": document,
    }


def _check_model(manifest: Manifest, model: str | Path | None, name: str) -> Path:
    path = resolve_model_path(model if model is not None else manifest.model_path)
    fingerprint = model_fingerprint(path)
    if fingerprint != manifest.model_fingerprint:
        raise EmbedtuneError(
            f"index '{name}' was built by the model at {manifest.model_path} "
            f"(fingerprint {manifest.model_fingerprint[:12]}), but {path} has fingerprint "
            f"{fingerprint[:12]}; its vectors are not comparable: rebuild the index with this model"
        )
    return path


# --- writing ------------------------------------------------------------------------------------


class _Generation:
    """The files of the generation being written, and the commit that publishes them."""

    def __init__(self, directory: Path, generation: int):
        self.dir, self.generation = directory, generation
        self.index_path = directory / index_file(generation)
        self.store_path = directory / store_file(generation)

    def commit(self, manifest: Manifest, faiss_index) -> Manifest:
        """Write the FAISS file, record both files' sizes and hashes, then replace the manifest."""
        import faiss

        faiss.write_index(faiss_index, str(self.index_path))
        for path in (self.index_path, self.store_path):  # durable before the manifest names them
            fsync_path(path)
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in (self.index_path, self.store_path)
        }
        manifest = replace(manifest, generation=self.generation, files=files, updated_at=_now())
        manifest.write(self.dir)
        fsync_path(self.dir)  # the rename itself
        return manifest


@contextmanager
def _writer_lock(directory: Path) -> Iterator[None]:
    """One writer per index at a time; a second gets a clear error rather than a lost update."""
    with (directory / _LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmbedtuneError(f"{directory}: another embedtune process is updating this index") from None
        yield


@contextmanager
def _new_generation(target: Path) -> Iterator[_Generation]:
    """A generation to write: in a fresh temporary directory for a new index, else beside the current one.

    On success a new index's directory is renamed into place, and an existing index's files that the
    new manifest does not name are deleted. On failure everything written here is deleted; the
    previous generation was never touched.
    """
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            yield _Generation(tmp, 1)
            os.rename(tmp, target)  # fails, rather than merging, if the target appeared meanwhile
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    with _writer_lock(target):
        try:
            current = Manifest.read(target / MANIFEST_FILE).generation
        except EmbedtuneError:  # replacing an unreadable or old-format index
            current = max((int(n) for n in re.findall(r"\.(\d+)\.", " ".join(os.listdir(target)))), default=0)
        generation = _Generation(target, current + 1)
        committed = False
        try:
            yield generation
            committed = True
        finally:
            keep = set(Manifest.read(target / MANIFEST_FILE).files) if committed else set()
            for name in os.listdir(target):
                written = name in (generation.index_path.name, generation.store_path.name)
                if (committed and _DATA_FILE.match(name) and name not in keep) or (not committed and written):
                    (target / name).unlink(missing_ok=True)


def _spec_for(
    index_type: str, n: int, dimension: int, memory_budget: int | None, params: dict[str, int | None]
) -> tuple[IndexSpec, str]:
    if index_type != "auto":
        return make_spec(index_type, n, dimension, **params), f"chosen explicitly (type {index_type})"
    given = [k for k, v in params.items() if v is not None]
    if given:
        raise EmbedtuneError(f"index parameter(s) {', '.join(given)} need an explicit index type, not auto")
    if memory_budget is None:
        import psutil

        memory_budget = psutil.virtual_memory().total // 2
    return choose_spec(n, dimension, memory_budget)


class _Ingest:
    """Stores documents and encodes them chunk by chunk, so no more than a chunk of texts is in memory."""

    def __init__(self, store: DocStore, encoder: Encoder, prompt_name: str | None, batch_size: int, progress):
        self.store, self.encoder, self.prompt_name = store, encoder, prompt_name
        self.batch_size, self.progress = batch_size, progress
        self.next_fid = store.next_fid()
        self.vectors: list[np.ndarray] = []
        self.fids: list[np.ndarray] = []
        self.seconds = 0.0

    def add(self, records: list[CorpusRecord], path: Path) -> None:
        if not records:
            return
        stored, seen = self.store.hashes([r.doc_id for r in records]), set()
        for r in records:
            if r.doc_id in seen or r.doc_id in stored:
                raise DataError(path, f"duplicate document id '{r.doc_id}'", line=r.line, field="_id")
            seen.add(r.doc_id)
        fids = np.arange(self.next_fid, self.next_fid + len(records), dtype=np.int64)
        self.store.insert((int(f), r.doc_id, r.text, r.metadata) for f, r in zip(fids, records, strict=True))
        self.next_fid += len(records)
        started = time.perf_counter()
        self.vectors.append(
            self.encoder.encode(
                [r.text for r in records],
                batch_size=self.batch_size,
                show_progress=False,
                prompt_name=self.prompt_name,
            )
        )
        self.seconds += time.perf_counter() - started
        self.fids.append(fids)
        self.progress.update(len(records))

    def result(self, dimension: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.vectors:
            return np.zeros((0, dimension), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return np.vstack(self.vectors), np.concatenate(self.fids)


def _progress(total: int | None, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="doc", disable=not show, dynamic_ncols=True)


def _chunked(records: Iterable[CorpusRecord], size: int = _ENCODE_CHUNK) -> Iterator[list[CorpusRecord]]:
    chunk: list[CorpusRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _add_vectors(faiss_index, vectors: np.ndarray, fids: np.ndarray, show_progress: bool) -> None:
    with _progress(len(vectors), "adding to FAISS", show_progress and len(vectors) > _ADD_CHUNK) as bar:
        for start in range(0, len(vectors), _ADD_CHUNK):
            faiss_index.add_with_ids(vectors[start : start + _ADD_CHUNK], fids[start : start + _ADD_CHUNK])
            bar.update(min(_ADD_CHUNK, len(vectors) - start))


def build_index(
    model: str | Path | None,
    corpus: str | Path,
    name: str,
    *,
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    batch_size: int = 32,
    precision: str = "auto",
    max_seq_length: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    index_type: str = "auto",
    nlist: int | None = None,
    pq_m: int | None = None,
    hnsw_m: int | None = None,
    ef_construction: int | None = None,
    train_size: int | None = None,
    memory_budget: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    cache: CacheOption = True,
) -> Path:
    """Encode ``corpus`` (a BEIR folder or corpus.jsonl) with ``model`` into ``indexes_dir/name``.

    ``index_type`` is one of :data:`embedtune.ann.INDEX_TYPES` or ``auto`` (chosen from the corpus
    size and ``memory_budget`` bytes, default half the RAM). IVF and SQ types train on a seeded
    sample of ``train_size`` vectors. The search knob is calibrated to ``target_recall`` of exact
    search. Replacing an existing index (``overwrite``) keeps it usable until the new one is complete.
    ``cache`` (see :class:`~embedtune.encoding.Encoder`) spares re-encoding texts on a rebuild.
    """
    if index_type != "auto" and index_type not in INDEX_TYPES:
        raise EmbedtuneError(f"unknown index type '{index_type}' (choose from auto, {', '.join(INDEX_TYPES)})")
    if not 0 < target_recall <= 1:
        raise EmbedtuneError(f"target recall must be in (0, 1], got {target_recall}")
    target = Path(indexes_dir) / name
    check_destination(target, overwrite)  # before the minutes of encoding, not after
    model_path = resolve_model_path(model)
    source = corpus_file(Path(corpus))
    if not source.is_file():
        raise EmbedtuneError(f"{source}: no such corpus file")
    st = load_model(model_path, max_seq_length=max_seq_length)
    encoder = Encoder(st, precision, cache=cache)
    described = describe_model(st)
    dimension = int(st.get_embedding_dimension())
    params = {"nlist": nlist, "pq_m": pq_m, "hnsw_m": hnsw_m, "ef_construction": ef_construction}
    lines = count_lines(source)
    if lines:  # bad parameters fail now, not after minutes of encoding
        _spec_for(index_type, lines, dimension, memory_budget, params)

    with _new_generation(target) as gen:
        store = DocStore(gen.store_path, create=True)
        try:
            with _progress(lines, f"encoding {source.name}", show_progress) as bar:
                ingest = _Ingest(store, encoder, described["document_prompt_name"], batch_size, bar)
                for chunk in _chunked(iter_corpus(source)):
                    ingest.add(chunk, source)
            store.commit()
        finally:
            store.close()
        vectors, fids = ingest.result(dimension)
        if len(vectors) == 0:
            raise DataError(source, "no documents")
        started = time.perf_counter()
        spec, choice = _spec_for(index_type, len(vectors), dimension, memory_budget, params)
        faiss_index = create_index(spec, dimension)
        sample = training_sample(vectors, spec, size=train_size) if spec.needs_training else vectors[:0]
        if spec.needs_training:
            faiss_index.train(sample)
        _add_vectors(faiss_index, vectors, fids, show_progress)
        calibration = calibrate(faiss_index, spec, vectors, fids, target_recall)
        if not calibration.reached:
            warnings.warn(
                f"{spec.kind} reaches recall@10 {calibration.recall_at_10} against exact search at best "
                f"({', '.join(f'{k}={v}' for k, v in calibration.knobs.items()) or 'no knob'}), short of the "
                f"target {target_recall}; a flat or IVF-flat index reaches it",
                EmbedtuneWarning,
                stacklevel=2,
            )
        manifest = Manifest(
            name=name,
            model_path=str(model_path),
            model_fingerprint=model_fingerprint(model_path),
            dimension=dimension,
            normalized=True,
            metric="inner_product",
            count=len(vectors),
            max_seq_length=int(st.max_seq_length),
            precision=encoder.precision,
            corpus_path=str(source.resolve()),
            corpus_sha256=file_sha256(source),
            embedtune_version=__version__,
            created_at=_now(),
            encode_seconds=round(ingest.seconds, 2),
            index_type=spec.kind,
            index_params=spec.params(),
            choice=choice,
            train_size=len(sample),
            build_seconds=round(time.perf_counter() - started, 2),
            search_defaults=calibration.knobs,
            calibration={k: v for k, v in asdict(calibration).items() if k != "knobs"},
            vectors=int(faiss_index.ntotal),
            **described,
        )
        gen.commit(manifest, faiss_index)
    return target


@dataclass(frozen=True)
class UpdateResult:
    """What an ``add`` or ``remove`` changed; ``missing`` lists ids asked to be removed that were absent."""

    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    removed: int = 0
    missing: list[str] = field(default_factory=list)
    encode_seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)


@contextmanager
def _update(index: str | Path, indexes_dir: Path) -> Iterator[tuple[Manifest, _Generation, DocStore, object]]:
    """The current manifest, a new generation with a writable copy of the store, and the FAISS index."""
    import faiss

    path = resolve_index_path(index, indexes_dir)
    Index.load(path).close()  # refuse to update a damaged index
    with _new_generation(path) as gen:
        manifest = Manifest.read(path / MANIFEST_FILE)
        shutil.copyfile(path / store_file(manifest.generation), gen.store_path)
        store = DocStore(gen.store_path, writable=True)
        try:
            yield manifest, gen, store, faiss.read_index(str(path / index_file(manifest.generation)))
        finally:
            store.close()


def _remove_fids(faiss_index, store: DocStore, spec: IndexSpec, fids: list[int]) -> None:
    """Delete documents; HNSW keeps their vectors as tombstones that searches filter out."""
    store.delete(fids, tombstone=not spec.supports_removal)
    if fids and spec.supports_removal:
        faiss_index.remove_ids(np.asarray(fids, dtype=np.int64))


def _commit_update(
    manifest: Manifest, gen: _Generation, store: DocStore, faiss_index, result: UpdateResult, **source: str
) -> None:
    store.commit()
    record = {k: v for k, v in asdict(result).items() if k != "missing"} | source | {"at": _now()}
    updated = replace(
        manifest,
        count=len(store),
        vectors=int(faiss_index.ntotal),
        tombstones=len(store.tombstones()),
        updates=[*manifest.updates, record],
    )
    gen.commit(updated, faiss_index)


def add_documents(
    index: str | Path,
    corpus: str | Path,
    *,
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    model: str | Path | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
    cache: CacheOption = True,
) -> UpdateResult:
    """Add new documents and replace changed ones from a corpus file, without rebuilding.

    A document whose id is already indexed with the same text (SHA-256) is left alone and not
    re-encoded. New vectors go into the existing IVF cells; after growing an IVF index several-fold
    a rebuild re-balances them.
    """
    source = corpus_file(Path(corpus))
    if not source.is_file():
        raise EmbedtuneError(f"{source}: no such corpus file")
    with _update(index, indexes_dir) as (manifest, gen, store, faiss_index):
        model_path = _check_model(manifest, model, manifest.name)
        st = load_model(model_path, max_seq_length=manifest.max_seq_length)
        encoder = Encoder(st, manifest.precision, cache=cache)
        seen: set[str] = set()
        replaced_fids: list[int] = []
        unchanged = 0
        with _progress(count_lines(source), f"adding {source.name}", show_progress) as bar:
            ingest = _Ingest(store, encoder, manifest.document_prompt_name, batch_size, bar)
            for chunk in _chunked(iter_corpus(source)):
                stored = store.hashes([r.doc_id for r in chunk])
                fresh = []
                for r in chunk:
                    if r.doc_id in seen:
                        raise DataError(source, f"duplicate document id '{r.doc_id}'", line=r.line, field="_id")
                    seen.add(r.doc_id)
                    old = stored.get(r.doc_id)
                    if old is not None and old[1] == text_sha256(r.text):
                        unchanged += 1
                        bar.update(1)
                    else:
                        fresh.append(r)
                old_fids = [stored[r.doc_id][0] for r in fresh if r.doc_id in stored]
                _remove_fids(faiss_index, store, manifest.spec, old_fids)  # before the new rows take their ids
                replaced_fids += old_fids
                ingest.add(fresh, source)
        if not seen:
            raise DataError(source, "no documents")
        vectors, fids = ingest.result(manifest.dimension)
        result = UpdateResult(
            added=len(vectors) - len(replaced_fids),
            replaced=len(replaced_fids),
            unchanged=unchanged,
            encode_seconds=round(ingest.seconds, 2),
        )
        if result.changed:
            _add_vectors(faiss_index, vectors, fids, show_progress)
            _commit_update(
                manifest, gen, store, faiss_index, result, source=str(source.resolve()), sha256=file_sha256(source)
            )
    return result


def remove_documents(
    index: str | Path, doc_ids: Iterable[str], *, indexes_dir: Path = DEFAULT_INDEXES_DIR
) -> UpdateResult:
    """Remove documents by id; ids that are not in the index are reported in ``missing``."""
    wanted = list(dict.fromkeys(doc_ids))
    if not wanted:
        raise EmbedtuneError("no document ids to remove")
    with _update(index, indexes_dir) as (manifest, gen, store, faiss_index):
        stored = store.hashes(wanted)
        _remove_fids(faiss_index, store, manifest.spec, [fid for fid, _ in stored.values()])
        result = UpdateResult(removed=len(stored), missing=[d for d in wanted if d not in stored])
        if result.changed:
            _commit_update(manifest, gen, store, faiss_index, result)
    return result


# --- reading ------------------------------------------------------------------------------------


class Index:
    """A loaded index: the FAISS vectors (memory-mapped where FAISS allows), the document store and manifest."""

    def __init__(self, path: Path, manifest: Manifest, faiss_index, store: DocStore):
        self.path, self.manifest, self.faiss_index, self.store = path, manifest, faiss_index, store
        tombstones = store.tombstones()
        self._selector = None
        if tombstones:
            import faiss

            self._batch = faiss.IDSelectorBatch(np.asarray(tombstones, dtype=np.int64))
            self._selector = faiss.IDSelectorNot(self._batch)  # keeps a reference: FAISS does not own it

    @classmethod
    def load(
        cls, index: str | Path, indexes_dir: Path = DEFAULT_INDEXES_DIR, *, mmap: bool = True, verify: bool = False
    ) -> Index:
        """Load and cross-check manifest, FAISS file and store; a mismatch is an error, not a wrong answer later.

        ``mmap`` maps the FAISS file instead of reading it (pages load on demand, shared between
        processes). ``verify`` also checks both files' SHA-256 against the manifest (reads them fully).
        """
        path = resolve_index_path(index, indexes_dir)
        manifest = Manifest.read(path / MANIFEST_FILE)
        try:
            return cls._load(path, manifest, mmap, verify)
        except EmbedtuneError:
            # A writer may have committed a new generation and deleted these files since we read the
            # manifest: then retry once with the new one; otherwise the files really are damaged.
            newer = Manifest.read(path / MANIFEST_FILE)
            if newer.generation == manifest.generation:
                raise
            return cls._load(path, newer, mmap, verify)

    @classmethod
    def _load(cls, path: Path, manifest: Manifest, mmap: bool, verify: bool) -> Index:
        import faiss

        expected = {index_file(manifest.generation), store_file(manifest.generation)}
        if set(manifest.files) != expected:
            raise EmbedtuneError(f"{path}: manifest names files {sorted(manifest.files)}, expected {sorted(expected)}")
        for name, info in sorted(manifest.files.items()):
            file = path / name
            if not file.is_file():
                raise EmbedtuneError(f"{path}: index is incomplete (no {name}); rebuild it")
            size = file.stat().st_size
            if size != info["bytes"] or (verify and file_sha256(file) != info["sha256"]):
                what = (
                    f"is {size} bytes, the manifest says {info['bytes']}"
                    if size != info["bytes"]
                    else "SHA-256 differs"
                )
                raise EmbedtuneError(
                    f"{file}: does not match the manifest ({what}): damaged or changed outside embedtune; rebuild it"
                )
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            faiss_index = faiss.read_index(str(path / index_file(manifest.generation)), flags)
        except RuntimeError as e:
            raise EmbedtuneError(
                f"{path / index_file(manifest.generation)}: unreadable FAISS index ({_first_line(e)})"
            ) from None
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

    @property
    def name(self) -> str:
        return self.path.name

    def __len__(self) -> int:
        return self.manifest.count

    def close(self) -> None:
        self.store.close()

    @property
    def doc_ids(self) -> list[str]:
        """All document ids in FAISS-id order (read from the store on each access: 1M ids take ~1 s)."""
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
        knobs = dict(self.manifest.search_defaults)
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is None:
                continue
            if knob_name(self.manifest.index_type) != name:
                raise EmbedtuneError(f"{name} does not apply to a {self.manifest.index_type} index")
            if value < 1:
                raise EmbedtuneError(f"{name} must be positive, got {value}")
            knobs[name] = value
        params = search_parameters(self.manifest.index_type, knobs, self._selector)
        return self.faiss_index.search(vectors, k, params=params)

    def check_model(self, model: str | Path | None) -> Path:
        """Return the model path after proving it is the one that built this index."""
        return _check_model(self.manifest, model, self.name)


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
