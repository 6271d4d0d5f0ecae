"""Merging shards into one index: check that they belong together, then build it on disk.

A merge refuses, with one line, shards that would make a silently wrong index: shards of another
model (content fingerprint), precision, encoding settings or corpus (SHA-256), shards of different
splits, a shard missing or present twice, a shard whose files changed since it was written, and a
document id found in two shards. Then it concatenates the shards' vectors into one memory-mapped
file a block at a time, and builds the FAISS index from it as a one-process build does
(:func:`embedtune.index.build.build_faiss`): IVF and SQ types train once on a sample and then take
the vectors a block at a time, and the exact search that calibrates the search knob reads the
vectors a block at a time, so the merge holds no more than the index being built, a sample and a
block, however large the corpus. The knob is calibrated on the probes a one-process build uses,
encoded by the shards' model where it is at hand (same fingerprint); elsewhere on corpus vectors,
with a warning, since they overstate the recall of real queries. The document stores are copied
row by row inside SQLite. The index is committed as a new generation
(:mod:`embedtune.index.generations`), like any build.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from embedtune.encoding import EncodeSettings, make_encoder
from embedtune.errors import DataError, EmbedtuneError, EmbedtuneWarning
from embedtune.index.build import _check_replaceable, build_faiss, index_manifest, query_probes
from embedtune.index.generations import new_generation
from embedtune.index.knobs import CORPUS_PROBES, Probes
from embedtune.index.lexical import LexicalSettings, write_lexical
from embedtune.index.manifest import DEFAULT_INDEXES_DIR, Manifest, check_index_name
from embedtune.index.shards import DATA_FILES, DOCS_FILE, SHARD_FILE, VECTORS_FILE, ShardRecord, shards_dir_of
from embedtune.index.store import DocStore
from embedtune.index.types import BuildSettings
from embedtune.io import check_destination, check_writable, file_xxh3, name_lock
from embedtune.models import load_model, model_fingerprint, resolve_model_path

COPY_BLOCK = 65_536  # vectors copied from a shard at a time
MERGE_VECTORS = ".merge-vectors.npy"  # the concatenated vectors, deleted before the commit


def read_shards(folder: Path) -> list[tuple[Path, ShardRecord]]:
    """The shards in ``folder``, in shard order, after checking they make exactly one whole corpus."""
    folder = Path(folder)
    found = [(p.parent, ShardRecord.read(p)) for p in sorted(folder.glob(f"*/{SHARD_FILE}"))]
    if not found:
        raise EmbedtuneError(f"{folder}: no shards (write them with shards=N and each shard=0..N-1)")
    _check_same(found)
    _check_coverage(folder, found)
    for path, record in found:
        _check_files(path, record)
    return sorted(found, key=lambda item: item[1].shard)


def _label(path: Path, record: ShardRecord) -> str:
    return f"shard {record.shard} of {record.shards} ({path})"


def _settings(identity: dict[str, object]) -> dict[str, object]:
    """The encoding settings shards must share: their identity less where the model was and what ran it."""
    return {k: v for k, v in identity.items() if k not in ("model_path", "backend")}


def _check_same(found: Sequence[tuple[Path, ShardRecord]]) -> None:
    """Every shard of the same split, model, precision, encoding and corpus as the first."""
    first_path, first = found[0]
    for path, record in found[1:]:
        what = None
        if record.shards != first.shards:
            what = f"a split into {record.shards} shards, {_label(first_path, first)} one into {first.shards}"
        elif record.identity["model_fingerprint"] != first.identity["model_fingerprint"]:
            what = (
                f"model fingerprint {str(record.identity['model_fingerprint'])[:12]} "
                f"({record.identity['model_path']}), not {str(first.identity['model_fingerprint'])[:12]}"
            )
        elif record.identity["precision"] != first.identity["precision"]:
            what = f"precision {record.identity['precision']}, not {first.identity['precision']}"
        # shards encoded by other backends merge: their vectors differ by rounding only
        elif _settings(record.identity) != _settings(first.identity):
            what = "other encoding settings (max_seq_length, pooling or prompts)"
        elif (record.corpus["corpus_sha256"], record.lines) != (first.corpus["corpus_sha256"], first.lines):
            theirs, ours = record.corpus["corpus_sha256"][:12], first.corpus["corpus_sha256"][:12]
            what = f"another corpus (sha256 {theirs}, not {ours})"
        if what:
            raise EmbedtuneError(
                f"{_label(path, record)} was encoded with {what}: every shard of an index must come from "
                "the same model, precision and corpus; encode it again"
            )


def _check_coverage(folder: Path, found: Sequence[tuple[Path, ShardRecord]]) -> None:
    """Each shard exactly once, none missing, and each starting where the one before ends."""
    shards = found[0][1].shards
    seen: dict[int, Path] = {}
    for path, record in found:
        if record.shard in seen:
            raise EmbedtuneError(
                f"shard {record.shard} of {shards} appears twice ({seen[record.shard]}, {path}); remove one"
            )
        seen[record.shard] = path
    missing = sorted(set(range(shards)) - set(seen))
    if missing:
        listed = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise EmbedtuneError(
            f"{folder}: missing shard(s) {listed} of {shards}; encode them with shards={shards}, shard=K"
        )
    expected = 0
    for path, record in sorted(found, key=lambda item: item[1].shard):
        if record.first_fid != expected:
            raise EmbedtuneError(
                f"{_label(path, record)} starts at document {record.first_fid}, but the shards before it "
                f"hold {expected}: the shards do not tile the corpus; encode them again"
            )
        expected += record.count


def _check_files(path: Path, record: ShardRecord) -> None:
    for name in DATA_FILES:
        file, info = path / name, record.files.get(name, {})
        if not file.is_file() or file.stat().st_size != info.get("bytes") or file_xxh3(file) != info.get("xxh3_128"):
            raise EmbedtuneError(
                f"{file}: missing or changed since the shard was written (size or checksum differs); "
                "encode this shard again"
            )


def merge_shards(
    name: str,
    *,
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    shards_dir: Path | None = None,
    build: BuildSettings | str = "auto",
    lexical: LexicalSettings | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Manifest:
    """Build index ``indexes_dir/name`` from the shards in ``shards_dir`` (default ``indexes_dir/NAME.shards``).

    ``build`` and ``lexical`` are as for :func:`~embedtune.index.build_index` (the BM25 side is built
    from the merged store's texts). The shards are left in place. Returns the
    committed manifest; it equals a one-process build's, apart from timings.
    """
    settings = BuildSettings(index_type=build) if isinstance(build, str) else build
    target = Path(indexes_dir) / check_index_name(name)
    folder = Path(shards_dir) if shards_dir is not None else shards_dir_of(indexes_dir, name)
    shards = read_shards(folder)
    check_writable(Path(indexes_dir), directory=True)
    check_destination(target, overwrite)
    first = shards[0][1]
    total = sum(record.count for _, record in shards)
    if total == 0:
        raise DataError(first.corpus["corpus_path"], "no documents")
    settings.choose(total, first.dimension)  # bad parameters fail before any copying
    with name_lock(target):
        check_destination(target, overwrite)
        _check_replaceable(target)
        with new_generation(target) as gen:
            _merge_stores(shards, gen.store_path)
            bm25 = _lexical(gen, lexical)
            vectors_path = gen.dir / MERGE_VECTORS
            try:
                vectors = _concatenate(shards, vectors_path, total, first.dimension)
                fids = np.arange(total, dtype=np.int64)
                probes = partial(_probes, first, gen.store_path, fids)
                built = build_faiss(vectors, fids, settings, show_progress, probes)
                del vectors
            finally:
                vectors_path.unlink(missing_ok=True)
            seconds = sum(record.encode_seconds for _, record in shards)
            backends = sorted({str(record.identity.get("backend", "torch")) for _, record in shards})
            identity = {**first.identity, "backend": "+".join(backends)}
            manifest = index_manifest(name, identity, first.corpus, seconds, built)
            return gen.commit(replace(manifest, lexical=bm25), built.faiss_index)


def _probes(record: ShardRecord, store_path: Path, fids: np.ndarray) -> Probes:
    """The probes a one-process build calibrates on, encoded by the shards' model where it is at hand;
    else corpus vectors, with a warning (a merge may run where the model is not)."""
    identity = record.identity
    try:
        model_path = resolve_model_path(str(identity["model_path"]))
        at_hand = model_fingerprint(model_path) == identity["model_fingerprint"]
    except EmbedtuneError:
        at_hand = False
    if not at_hand:
        warnings.warn(
            f"the shards' model is not at {identity['model_path']} (or has changed): the search knob is calibrated "
            "on corpus vectors, which overstate the recall of real queries; calibrate the index on real queries "
            "('index calibrate')",
            EmbedtuneWarning,
            stacklevel=4,
        )
        return CORPUS_PROBES
    st = load_model(model_path, max_seq_length=int(identity["max_seq_length"]))
    encoder = make_encoder(st, str(identity["precision"]), backend="torch")
    folder = Path(record.corpus["corpus_path"]).parent
    prompt = identity.get("query_prompt_name")
    return query_probes(store_path, fids, folder, encoder, prompt, EncodeSettings().batch_size)


def _lexical(gen, settings: LexicalSettings | None) -> dict[str, object]:
    """The merged index's BM25 side, built from its merged store as a one-process build does."""
    if not (settings or LexicalSettings()).bm25:
        return {}
    store = DocStore(gen.store_path)
    try:
        return write_lexical(store, gen.lexical_path) if len(store) else {}
    finally:
        store.close()


def _merge_stores(shards: Sequence[tuple[Path, ShardRecord]], path: Path) -> None:
    """Copy every shard's documents into one store, inside SQLite; an id in two shards is refused."""
    store = DocStore(path, create=True)
    conn = store.conn
    try:
        for shard_path, record in shards:
            conn.execute("ATTACH DATABASE ? AS shard", (str(shard_path / DOCS_FILE),))
            try:
                conn.execute("INSERT INTO docs SELECT fid, doc_id, text, text_sha256, metadata FROM shard.docs")
                conn.commit()
            except sqlite3.IntegrityError as e:
                conn.rollback()
                (doc_id,) = conn.execute(
                    "SELECT doc_id FROM shard.docs WHERE doc_id IN (SELECT doc_id FROM main.docs) LIMIT 1"
                ).fetchone() or ("?",)
                raise DataError(
                    record.corpus["corpus_path"],
                    f"duplicate document id '{doc_id}' (in {_label(shard_path, record)} and an earlier shard)",
                    field="_id",
                ) from e
            finally:
                conn.execute("DETACH DATABASE shard")
    finally:
        store.close()


def _concatenate(shards: Sequence[tuple[Path, ShardRecord]], path: Path, total: int, dimension: int) -> np.ndarray:
    """All shards' vectors in one float32 ``.npy`` file, copied a block at a time; returned memory-mapped."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(total, dimension))
    row = 0
    for shard_path, _ in shards:
        part = np.load(shard_path / VECTORS_FILE, mmap_mode="r")
        for start in range(0, len(part), COPY_BLOCK):
            block = part[start : start + COPY_BLOCK]
            out[row : row + len(block)] = block
            row += len(block)
        del part
    out.flush()
    del out
    return np.load(path, mmap_mode="r")
