"""Building and loading FAISS indexes that remember the model and corpus they were made from.

An index is a directory ``indexes/NAME/`` holding

* ``index.faiss`` — exact inner-product search over L2-normalised vectors (= cosine similarity);
* ``docs.jsonl`` — one ``{"id", "text"}`` per FAISS row, so row *i* is document *i*;
* ``manifest.json`` — the model (path and content fingerprint), dimension, normalisation, count,
  encoding settings and corpus, so a query is never encoded by a model other than the index's.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embedtune import __version__
from embedtune.atomic import atomic_directory, check_destination
from embedtune.data import find_data_file, load_corpus, read_jsonl
from embedtune.encoding import Encoder
from embedtune.errors import DataError, EmbedtuneError
from embedtune.hashing import file_sha256
from embedtune.models import load_model, model_fingerprint, resolve_model_path

DEFAULT_INDEXES_DIR = Path("indexes")
INDEX_FILE, DOCS_FILE, MANIFEST_FILE = "index.faiss", "docs.jsonl", "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What an index is: enough to refuse a mismatched model and to rebuild it identically."""

    name: str
    model_path: str
    model_fingerprint: str
    dimension: int
    normalized: bool
    metric: str
    count: int
    max_seq_length: int
    precision: str
    corpus_path: str
    corpus_sha256: str
    embedtune_version: str
    created_at: str
    encode_seconds: float

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**raw)
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise EmbedtuneError(f"{path}: unreadable index manifest ({e})") from None


def resolve_index_path(index: str | Path, indexes_dir: Path = DEFAULT_INDEXES_DIR) -> Path:
    """An index given by name (``indexes_dir/NAME``) or by path; it must exist."""
    candidates = [Path(index)] if Path(index).is_absolute() else [Path(indexes_dir) / index, Path(index)]
    for candidate in candidates:
        if (candidate / MANIFEST_FILE).is_file():
            return candidate
    available = sorted(m.parent.name for m in Path(indexes_dir).glob(f"*/{MANIFEST_FILE}"))
    hint = f"; available: {', '.join(available)}" if available else f"; {indexes_dir} has no indexes"
    raise EmbedtuneError(f"no index '{index}' (looked in {candidates[0]}){hint}")


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
) -> Path:
    """Encode ``corpus`` (a BEIR folder or corpus.jsonl) with ``model`` into ``indexes_dir/name``.

    Everything is written to a temporary directory first and renamed into place at the end.
    """
    import faiss

    target = Path(indexes_dir) / name
    check_destination(target, overwrite)  # before the minutes of encoding, not after
    model_path = resolve_model_path(model)
    corpus_path = Path(corpus)
    docs = load_corpus(corpus_path)
    corpus_file = corpus_path if corpus_path.is_file() else find_data_file(corpus_path, "corpus.jsonl")
    st = load_model(model_path, max_seq_length=max_seq_length)
    encoder = Encoder(st, precision)

    started = time.perf_counter()
    vectors = encoder.encode(list(docs.values()), role="document", batch_size=batch_size, show_progress=show_progress)
    encode_seconds = time.perf_counter() - started

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    manifest = Manifest(
        name=name,
        model_path=str(model_path),
        model_fingerprint=model_fingerprint(model_path),
        dimension=int(vectors.shape[1]),
        normalized=True,
        metric="inner_product",
        count=len(docs),
        max_seq_length=int(st.max_seq_length),
        precision=encoder.precision,
        corpus_path=str(corpus_file.resolve()),
        corpus_sha256=file_sha256(corpus_file),
        embedtune_version=__version__,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        encode_seconds=round(encode_seconds, 2),
    )
    with atomic_directory(target, overwrite=overwrite) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        with (tmp / DOCS_FILE).open("w", encoding="utf-8") as f:
            for doc_id, text in docs.items():
                f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
        (tmp / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2) + "\n", encoding="utf-8")
    return target


class Index:
    """A loaded index: FAISS vectors, the document ids and texts by row, and the manifest."""

    def __init__(self, path: Path, manifest: Manifest, faiss_index, doc_ids: list[str], texts: list[str]):
        self.path, self.manifest, self.faiss_index = path, manifest, faiss_index
        self.doc_ids, self.texts = doc_ids, texts

    @classmethod
    def load(cls, index: str | Path, indexes_dir: Path = DEFAULT_INDEXES_DIR) -> Index:
        """Load and cross-check the three files; a mismatch is an error, not a wrong answer later."""
        import faiss

        path = resolve_index_path(index, indexes_dir)
        manifest = Manifest.read(path / MANIFEST_FILE)
        for file in (INDEX_FILE, DOCS_FILE):
            if not (path / file).is_file():
                raise EmbedtuneError(f"{path}: index is incomplete (no {file}); rebuild it")
        try:
            faiss_index = faiss.read_index(str(path / INDEX_FILE))
        except RuntimeError as e:
            raise EmbedtuneError(f"{path / INDEX_FILE}: unreadable FAISS index ({str(e).splitlines()[0]})") from None
        doc_ids, texts = [], []
        for line, row in read_jsonl(path / DOCS_FILE):
            if not isinstance(row.get("id"), str) or not isinstance(row.get("text"), str):
                raise DataError(
                    path / DOCS_FILE, "expected string fields 'id' and 'text'; rebuild the index", line=line
                )
            doc_ids.append(row["id"])
            texts.append(row["text"])
        if not (faiss_index.ntotal == len(doc_ids) == manifest.count) or faiss_index.d != manifest.dimension:
            raise EmbedtuneError(
                f"{path}: index files disagree (manifest: {manifest.count} x {manifest.dimension}, "
                f"{INDEX_FILE}: {faiss_index.ntotal} x {faiss_index.d}, {DOCS_FILE}: {len(doc_ids)} rows); rebuild it"
            )
        return cls(path, manifest, faiss_index, doc_ids, texts)

    @property
    def name(self) -> str:
        return self.path.name

    def __len__(self) -> int:
        return len(self.doc_ids)

    def search_vectors(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, row ids) per query vector; ``k`` is capped at the index size."""
        if k <= 0:
            raise EmbedtuneError(f"k must be positive, got {k}")
        return self.faiss_index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, len(self)))

    def check_model(self, model: str | Path | None) -> Path:
        """Return the model path after proving it is the one that built this index."""
        path = resolve_model_path(model if model is not None else self.manifest.model_path)
        fingerprint = model_fingerprint(path)
        if fingerprint != self.manifest.model_fingerprint:
            built_by = self.manifest.model_path
            raise EmbedtuneError(
                f"index '{self.name}' was built by the model at {built_by} "
                f"(fingerprint {self.manifest.model_fingerprint[:12]}), but {path} has fingerprint "
                f"{fingerprint[:12]}; its vectors are not comparable: rebuild the index with this model"
            )
        return path
