"""Changing a built index without a rebuild: add new and changed documents, remove documents by id.

An update copies the current store, changes the copy and the FAISS index in memory, and commits
them as the next generation (:mod:`embedtune.index.generations`), so readers keep the previous
generation until the manifest is replaced. Only the model that built the index may add to it
(checked by content fingerprint), a damaged index is refused before anything is written, and a
document whose text is unchanged (same SHA-256) is not re-encoded. Nothing to change writes nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from embedtune.data import CorpusRecord, corpus_file, count_lines, iter_corpus
from embedtune.encoding import CacheOption, Encoder
from embedtune.errors import DataError, EmbedtuneError
from embedtune.index.generations import Generation, new_generation
from embedtune.index.index import Index, check_model, resolve_index_path
from embedtune.index.ingest import Ingest, add_vectors, chunked, progress_bar
from embedtune.index.lexical import lexical_file, write_lexical
from embedtune.index.manifest import DEFAULT_INDEXES_DIR, MANIFEST_FILE, Manifest, index_file, now, store_file
from embedtune.index.store import DocStore, text_sha256
from embedtune.index.types import IndexSpec
from embedtune.io import check_writable, file_sha256
from embedtune.models import load_model


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
def _update(index: str | Path, indexes_dir: Path) -> Iterator[tuple[Manifest, Generation, DocStore, object]]:
    """The current manifest, a new generation with a writable copy of the store, and the FAISS index."""
    import faiss

    path = resolve_index_path(index, indexes_dir)
    check_writable(path, directory=True)  # a read-only index says so before the model loads
    Index.load(path).close()  # refuse to update a damaged index
    with new_generation(path) as gen:
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
    manifest: Manifest, gen: Generation, store: DocStore, faiss_index, result: UpdateResult, **source: str
) -> None:
    store.commit()
    lexical = write_lexical(store, gen.lexical_path) if manifest.lexical else {}  # empty when every doc is gone
    record = {k: v for k, v in asdict(result).items() if k != "missing"} | source | {"at": now()}
    updated = replace(
        manifest,
        count=len(store),
        vectors=int(faiss_index.ntotal),
        tombstones=len(store.tombstones()),
        updates=[*manifest.updates, record],
        lexical=lexical,
    )
    gen.commit(updated, faiss_index)


class _Changes:
    """Sorts an update corpus's records into unchanged and fresh (new or changed), refusing repeated ids."""

    def __init__(self, source: Path, store: DocStore, progress):
        self.source, self.store, self.progress = source, store, progress
        self.seen: set[str] = set()
        self.replaced_fids: list[int] = []
        self.unchanged = 0

    def fresh(self, chunk: list[CorpusRecord]) -> tuple[list[CorpusRecord], list[int]]:
        """The records to encode, and the FAISS ids of the stored versions they replace."""
        stored = self.store.hashes([r.doc_id for r in chunk])
        fresh = []
        for r in chunk:
            if r.doc_id in self.seen:
                raise DataError(self.source, f"duplicate document id '{r.doc_id}'", line=r.line, field="_id")
            self.seen.add(r.doc_id)
            old = stored.get(r.doc_id)
            if old is not None and old[1] == text_sha256(r.text):
                self.unchanged += 1
                self.progress.update(1)
            else:
                fresh.append(r)
        old_fids = [stored[r.doc_id][0] for r in fresh if r.doc_id in stored]
        self.replaced_fids += old_fids
        return fresh, old_fids


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
        model_path = check_model(manifest, model, manifest.name)
        st = load_model(model_path, max_seq_length=manifest.max_seq_length)
        encoder = Encoder(st, manifest.precision, cache=cache)
        with progress_bar(count_lines(source), f"adding {source.name}", show_progress) as bar:
            ingest = Ingest(store, encoder, manifest.document_prompt_name, batch_size, bar)
            changes = _Changes(source, store, bar)
            for chunk in chunked(iter_corpus(source)):
                fresh, old_fids = changes.fresh(chunk)
                _remove_fids(faiss_index, store, manifest.spec, old_fids)  # before the new rows take their ids
                ingest.add(fresh, source)
        if not changes.seen:
            raise DataError(source, "no documents")
        vectors, fids = ingest.result(manifest.dimension)
        result = UpdateResult(
            added=len(vectors) - len(changes.replaced_fids),
            replaced=len(changes.replaced_fids),
            unchanged=changes.unchanged,
            encode_seconds=round(ingest.seconds, 2),
        )
        if result.changed:
            add_vectors(faiss_index, vectors, fids, show_progress)
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


def set_calibration(
    index: str | Path,
    *,
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    search_defaults: dict[str, int],
    query_calibration: dict[str, object],
) -> Manifest:
    """Commit new calibrated search defaults and the calibration on real queries, data files unchanged."""
    with _update(index, indexes_dir) as (manifest, gen, _store, faiss_index):
        if manifest.lexical:
            shutil.copyfile(gen.dir / lexical_file(manifest.generation), gen.lexical_path)
        updated = replace(manifest, search_defaults=search_defaults, query_calibration=query_calibration)
        return gen.commit(updated, faiss_index)


def add_bm25(index: str | Path, *, indexes_dir: Path = DEFAULT_INDEXES_DIR) -> Manifest:
    """Give an index built without a BM25 side one, from its stored texts (no re-encoding)."""
    with _update(index, indexes_dir) as (manifest, gen, store, faiss_index):
        updated = replace(manifest, lexical=write_lexical(store, gen.lexical_path))
        return gen.commit(updated, faiss_index)
