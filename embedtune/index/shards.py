"""Sharded corpus encoding: one process (a Slurm task, a Kubernetes job, a shell loop, a Ray actor)
writes one shard's vectors and documents; :mod:`embedtune.index.merge` builds the index from them.

Shard ``K`` of ``N`` holds the documents on the ``K``-th of ``N`` equal ranges of the corpus file's
lines, so shards need no coordination beyond the corpus file, and each document keeps the FAISS id
it gets in a one-process build (its position in the corpus): the merged index equals the
one-process one. A shard is a folder ``NAME.shards/shard-K-of-N/`` (beside the indexes, ignored by
index listings) of three files: ``vectors.npy`` (float32, memory-mapped by the merge),
``docs.sqlite`` (the document store of :mod:`embedtune.index.store`) and ``shard.json``, which
records the model identity, precision, corpus hash and line range the merge checks. It is written to
a temporary folder and renamed into place, so a killed job leaves no shard the merge could take for
a complete one; rerunning it writes the shard anew.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from embedtune import __version__
from embedtune.data import CorpusRecord, corpus_file, count_lines, iter_corpus
from embedtune.encoding import Encoder, EncodeSettings, make_encoder, prompt_names
from embedtune.errors import EmbedtuneError
from embedtune.index.build import corpus_identity, model_identity
from embedtune.index.ingest import Ingest, chunked, progress_bar
from embedtune.index.manifest import DEFAULT_INDEXES_DIR, check_index_name, now
from embedtune.index.store import DocStore
from embedtune.io import atomic_directory, check_destination, check_writable, file_xxh3, write_text_atomic
from embedtune.models import load_model, resolve_model_path
from embedtune.settings import SettingError, setting, validate

SHARD_FILE = "shard.json"
VECTORS_FILE = "vectors.npy"
DOCS_FILE = "docs.sqlite"
DATA_FILES = (VECTORS_FILE, DOCS_FILE)
SHARD_FORMAT = 1


@dataclass(frozen=True)
class ShardSettings:
    """How a build is split: ``shards`` line ranges, one of them (``shard``) per process, or all on Ray."""

    shards: int | None = setting(
        None,
        help="Split the corpus into this many shards (equal ranges of its lines). With --shard, encode one; "
        "with --ray, encode all on Ray and merge (default there: one per Ray worker).",
        min=1,
    )
    shard: int | None = setting(
        None,
        help="Encode only this shard (0 to shards-1) into INDEXES_DIR/NAME.shards/ and stop; "
        "'embedtune index merge NAME' builds the index once every shard is written.",
        min=0,
    )
    ray: str | None = setting(
        None,
        help="Encode the shards on a Ray cluster (one model-holding actor per worker) and merge, in one "
        "command: the cluster's ADDRESS, or no value for RAY_ADDRESS / a local Ray instance.",
        cli=False,  # an option with an optional value, declared by the command (cli/index.py)
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.shard is not None and self.shards is None:
            raise SettingError("shard", "needs shards (how many shards the corpus is split into)")
        if self.shard is not None and self.shard >= self.shards:
            raise SettingError("shard", f"must be below shards ({self.shards}), got {self.shard}")
        if self.shard is not None and self.ray is not None:
            raise SettingError("shard", "encodes one shard in this process; ray encodes them all: give one")


def shards_dir_of(indexes_dir: Path, name: str) -> Path:
    """Where the shards of index ``name`` are written by default: ``indexes_dir/NAME.shards``."""
    return Path(indexes_dir) / f"{check_index_name(name)}.shards"


def shard_dir(shards_dir: Path, shards: int, shard: int) -> Path:
    return Path(shards_dir) / f"shard-{shard:05d}-of-{shards:05d}"


def line_range(lines: int, shards: int, shard: int) -> tuple[int, int]:
    """Shard ``shard``'s corpus lines ``[first, end)`` (1-based): ``N`` near-equal ranges of the file.

    ``lines`` counts newlines; a last line without one is line ``lines + 1``, so the ranges span that too.
    """
    span = lines + 1
    return 1 + shard * span // shards, 1 + (shard + 1) * span // shards


@dataclass(frozen=True)
class ShardRecord:
    """What ``shard.json`` says: enough for a merge to refuse a shard of another model, corpus or split."""

    name: str
    shards: int
    shard: int
    lines: int  # newlines in the corpus file, which fixes every shard's range
    first_line: int
    end_line: int
    first_fid: int  # documents in the corpus before this shard: its first document's FAISS id
    count: int
    dimension: int
    identity: dict[str, object]  # the model manifest fields (embedtune.index.build.model_identity)
    corpus: dict[str, str]  # corpus_path, corpus_sha256
    encode_seconds: float
    files: dict[str, dict[str, object]] = field(default_factory=dict)  # name -> {"bytes", "xxh3_128"}
    created_at: str = ""
    embedtune_version: str = __version__
    format: int = SHARD_FORMAT

    def write(self, directory: Path) -> None:
        write_text_atomic(Path(directory) / SHARD_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> ShardRecord:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            if raw.get("format") != SHARD_FORMAT:
                raise ValueError(f"format {raw.get('format')}, this embedtune reads {SHARD_FORMAT}")
            return cls(**raw)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise EmbedtuneError(f"{path}: unreadable shard record ({e}); encode this shard again") from e


def shard_files(directory: Path) -> dict[str, dict[str, object]]:
    """What ``shard.json`` records of a shard's data files: their sizes and checksums, which the merge checks."""
    return {f: {"bytes": (directory / f).stat().st_size, "xxh3_128": file_xxh3(directory / f)} for f in DATA_FILES}


class _CorpusSlice:
    """The corpus records on lines ``[first, end)``, counting the records before them (the first FAISS id)."""

    def __init__(self, source: Path, first: int, end: int):
        self.source, self.first, self.end, self.before = source, first, end, 0

    def __iter__(self) -> Iterator[CorpusRecord]:
        for record in iter_corpus(self.source):
            if record.line >= self.end:
                return
            if record.line < self.first:
                self.before += 1
                continue
            yield record


class ShardEncoder:
    """A model loaded once for any number of shards (each Ray actor holds one)."""

    def __init__(self, model: str | Path | None, encode: EncodeSettings):
        self.model_path, self.settings = resolve_model_path(model), encode
        self.model = load_model(self.model_path, max_seq_length=encode.max_seq_length)
        self.prompt_name = prompt_names(self.model)[1]
        self.dimension = int(self.model.get_embedding_dimension())
        self._ready: tuple[Encoder, dict[str, object]] | None = None

    def _encoder(self, lines: int) -> tuple[Encoder, dict[str, object]]:
        """The encoder and the model identity its shards record, made once, at the first shard, for the whole
        corpus's ``lines``: the backend and precision a one-process build of that corpus picks, so that a
        merged index equals it."""
        if self._ready is None:
            s = self.settings
            encoder = make_encoder(self.model, s.precision, backend=s.backend, workload=lines, cache=s.cache)
            self._ready = encoder, model_identity(self.model_path, self.model, encoder.precision, encoder.backend)
        return self._ready

    def write(
        self, source: Path, target: Path, name: str, shards: int, shard: int, *, overwrite: bool, show_progress: bool
    ) -> ShardRecord:
        """Encode shard ``shard`` of ``shards`` of corpus file ``source`` into the folder ``target``."""
        lines = count_lines(source)
        encoder, identity = self._encoder(lines)
        first, end = line_range(lines, shards, shard)
        part = _CorpusSlice(source, first, end)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(target, overwrite=overwrite) as tmp:
            store = DocStore(tmp / DOCS_FILE, create=True)
            try:
                desc = f"encoding {source.name} shard {shard}/{shards}"
                with progress_bar(end - first, desc, show_progress) as bar:
                    ingest = Ingest(store, encoder, self.prompt_name, self.settings.batch_size, bar)
                    for chunk in chunked(part):
                        ingest.next_fid = max(ingest.next_fid, part.before)  # FAISS ids = corpus positions
                        ingest.add(chunk, source)
                store.commit()
            finally:
                store.close()
            vectors, _ = ingest.result(self.dimension)
            np.save(tmp / VECTORS_FILE, np.ascontiguousarray(vectors, dtype=np.float32))
            record = ShardRecord(
                name=name,
                shards=shards,
                shard=shard,
                lines=lines,
                first_line=first,
                end_line=end,
                first_fid=part.before,
                count=len(vectors),
                dimension=self.dimension,
                identity=identity,
                corpus=corpus_identity(source),
                encode_seconds=round(ingest.seconds, 2),
                files=shard_files(tmp),
                created_at=now(),
            )
            record.write(tmp)
        return record


def encode_shard(
    corpus: str | Path,
    name: str,
    *,
    shards: int,
    shard: int,
    model: str | Path | None = None,
    encode: EncodeSettings | None = None,
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    shards_dir: Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> ShardRecord:
    """Encode shard ``shard`` (0-based) of ``shards`` of ``corpus`` with ``model`` for index ``name``.

    Writes ``shards_dir`` (default ``indexes_dir/NAME.shards``) ``/shard-K-of-N``; an existing shard is
    replaced only with ``overwrite``. :func:`embedtune.index.merge.merge_shards` builds the index.
    """
    ShardSettings(shards=shards, shard=shard)
    folder = Path(shards_dir) if shards_dir is not None else shards_dir_of(indexes_dir, name)
    target = shard_dir(folder, shards, shard)
    check_destination(target, overwrite)  # before the minutes of encoding, not after
    check_writable(folder, directory=True)
    source = corpus_file(Path(corpus))
    if not source.is_file():
        raise EmbedtuneError(f"{source}: no such corpus file")
    return ShardEncoder(model, encode or EncodeSettings()).write(
        source, target, name, shards, shard, overwrite=overwrite, show_progress=show_progress
    )
