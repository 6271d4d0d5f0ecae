"""Building an index: encode a corpus, choose and train the FAISS type, calibrate its search knob, commit.

:func:`build_index` checks everything it can before the minutes of encoding (the destination, the
model, the corpus file, the index parameters against the corpus size), streams the corpus into the
document store and the encoder a chunk at a time, and writes the result as a new generation
(:mod:`embedtune.index.generations`), so a failed or killed build leaves any previous index of that
name usable. The manifest it returns records the model's fingerprint, so the index is never searched
with another model. The search knob is calibrated on query-like probes encoded as searches encode
queries (:func:`query_probes`), and only where the type has one to tune: a flat index is exact.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from embedtune import __version__
from embedtune.data import corpus_file, count_lines, iter_corpus
from embedtune.encoding import Encoder, EncodeSettings, make_encoder, prompt_names
from embedtune.errors import DataError, EmbedtuneError, EmbedtuneWarning
from embedtune.index.generations import new_generation
from embedtune.index.ingest import Ingest, add_vectors, chunked, progress_bar
from embedtune.index.knobs import Calibration, Probes, calibrate, probe_texts
from embedtune.index.lexical import LexicalSettings, write_lexical
from embedtune.index.manifest import DEFAULT_INDEXES_DIR, MANIFEST_FILE, Manifest, check_index_name, now
from embedtune.index.store import DocStore
from embedtune.index.types import BuildSettings, IndexSpec, create_index, training_sample
from embedtune.io import check_destination, check_writable, file_sha256, name_lock, refuse_overlap
from embedtune.models import load_model, model_fingerprint, resolve_model_path


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


@dataclass
class _Built:
    """A trained, filled and calibrated FAISS index, and what the manifest says about it."""

    faiss_index: object
    spec: IndexSpec
    choice: str
    train_size: int
    seconds: float
    calibration: Calibration


def build_index(
    corpus: str | Path,
    name: str,
    *,
    model: str | Path | None = None,
    build: BuildSettings | str = "auto",
    encode: EncodeSettings | None = None,
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    overwrite: bool = False,
    show_progress: bool = True,
    lexical: LexicalSettings | None = None,
) -> Manifest:
    """Encode ``corpus`` (a BEIR folder or corpus.jsonl) with ``model`` into ``indexes_dir/name``.

    ``model`` is a model directory, or ``None``/``"default"`` for the bundled one. ``build`` says
    which index type and parameters (:class:`~embedtune.index.types.BuildSettings`; a string is the
    type alone, ``"auto"`` chooses from the corpus size and half the RAM); ``encode`` how texts are
    encoded (default :class:`~embedtune.encoding.EncodeSettings`; its ``cache`` spares re-encoding
    texts on a rebuild); ``lexical`` whether a BM25 side is stored too (default: yes). Replacing an existing index
    (``overwrite``) keeps it usable until the new one is complete. Returns the committed manifest.
    """
    settings = BuildSettings(index_type=build) if isinstance(build, str) else build
    encode = encode or EncodeSettings()
    target = Path(indexes_dir) / check_index_name(name)
    check_writable(Path(indexes_dir), directory=True)
    check_destination(target, overwrite)  # before the minutes of encoding, not after
    model_path = resolve_model_path(model)
    source = corpus_file(Path(corpus))
    if not source.is_file():
        raise EmbedtuneError(f"{source}: no such corpus file")
    refuse_overlap(target, [Path(corpus), model_path], what="index")  # replacing it would delete what it reads
    Path(indexes_dir).mkdir(parents=True, exist_ok=True)
    with name_lock(target):  # a second build of this name fails now, not after all its encoding
        check_destination(target, overwrite)
        _check_replaceable(target)
        return _build(source, name, target, model_path, settings, encode, lexical or LexicalSettings(), show_progress)


def _check_replaceable(target: Path) -> None:
    """Only an embedtune index (a folder with a manifest, even a damaged one) may be replaced."""
    if target.exists() and not (target.is_dir() and (target / MANIFEST_FILE).is_file()):
        raise EmbedtuneError(
            f"{target}: is not an embedtune index (no {MANIFEST_FILE}); refusing to replace it: "
            "choose another name or move it away"
        )


def _build(
    source: Path,
    name: str,
    target: Path,
    model_path: Path,
    settings: BuildSettings,
    encode: EncodeSettings,
    lexical: LexicalSettings,
    show_progress: bool,
) -> Manifest:
    """The build itself, under the name's lock: encode, choose and fill the FAISS index, commit."""
    st = load_model(model_path, max_seq_length=encode.max_seq_length)
    lines = count_lines(source)
    encoder = make_encoder(st, encode.precision, backend=encode.backend, workload=lines, cache=encode.cache)
    dimension = int(st.get_embedding_dimension())
    if lines:  # bad parameters fail now, not after minutes of encoding
        settings.choose(lines, dimension)

    with new_generation(target) as gen:
        store = DocStore(gen.store_path, create=True)
        try:
            with progress_bar(lines, f"encoding {source.name}", show_progress) as bar:
                ingest = Ingest(store, encoder, prompt_names(st)[1], encode.batch_size, bar)
                for chunk in chunked(iter_corpus(source)):
                    ingest.add(chunk, source)
            store.commit()
            bm25 = write_lexical(store, gen.lexical_path) if lexical.bm25 and len(store) else {}
        finally:
            store.close()
        vectors, fids = ingest.result(dimension)
        if len(vectors) == 0:
            raise DataError(source, "no documents")
        probes = partial(
            query_probes, gen.store_path, fids, source.parent, encoder, prompt_names(st)[0], encode.batch_size
        )
        built = build_faiss(vectors, fids, settings, show_progress, probes)
        identity = model_identity(model_path, st, encoder.precision, encoder.backend)
        manifest = replace(index_manifest(name, identity, corpus_identity(source), ingest.seconds, built), lexical=bm25)
        committed = gen.commit(manifest, built.faiss_index)
    return committed


def build_faiss(
    vectors: np.ndarray, fids: np.ndarray, settings: BuildSettings, show_progress: bool, probes: Callable[[], Probes]
) -> _Built:
    """Choose the type for these vectors, train it on a sample, add them all, and calibrate the search knob
    on ``probes()`` (made only for a type that is not exact: encoding them costs seconds)."""
    started = time.perf_counter()
    dimension = vectors.shape[1]
    spec, choice = settings.choose(len(vectors), dimension)
    faiss_index = create_index(spec, dimension)
    sample = training_sample(vectors, spec, size=settings.train_size) if spec.needs_training else vectors[:0]
    if spec.needs_training:
        faiss_index.train(sample)
    add_vectors(faiss_index, vectors, fids, show_progress)
    if spec.kind == "flat":  # exact search: nothing to calibrate
        calibration = Calibration({}, 1.0, 0, settings.target_recall, True, "none (exact search)")
    else:
        calibration = calibrate(faiss_index, spec, vectors, fids, settings.target_recall, probes())
    if not calibration.reached:
        warnings.warn(
            f"{spec.kind} reaches recall@10 {calibration.recall_at_10} against exact search at best "
            f"({', '.join(f'{k}={v}' for k, v in calibration.knobs.items()) or 'no knob'}), short of the "
            f"target {settings.target_recall}; a flat or IVF-flat index reaches it",
            EmbedtuneWarning,
            stacklevel=4,
        )
    seconds = round(time.perf_counter() - started, 2)
    return _Built(faiss_index, spec, choice, len(sample), seconds, calibration)


def query_probes(
    store_path: Path, fids: np.ndarray, folder: Path, encoder: Encoder, prompt_name: str | None, batch_size: int
) -> Probes:
    """The probes to calibrate on (:func:`embedtune.index.knobs.probe_texts`: the judged queries of the BEIR
    ``folder`` the corpus is in, else titles or first sentences of the stored documents ``fids``), encoded
    as searches encode queries: by ``encoder`` (the documents' own), with the query prompt ``prompt_name``."""
    store = DocStore(store_path)
    try:
        texts, kind = probe_texts(store, fids, folder)
    finally:
        store.close()
    vectors = encoder.encode(texts, batch_size=batch_size, show_progress=False, prompt_name=prompt_name)
    return Probes(vectors, kind)


def model_identity(model_path: Path, st, precision: str, backend: str) -> dict[str, object]:
    """The manifest fields that say which model encoded the vectors, and how (shards carry them to a merge)."""
    return {
        "model_path": str(model_path),
        "model_fingerprint": model_fingerprint(model_path),
        "max_seq_length": int(st.max_seq_length),
        "precision": precision,
        "backend": backend,
        **describe_model(st),
    }


def corpus_identity(source: Path) -> dict[str, str]:
    """The manifest fields that say which corpus file was encoded."""
    return {"corpus_path": str(source.resolve()), "corpus_sha256": file_sha256(source)}


def index_manifest(
    name: str, identity: dict[str, object], corpus: dict[str, str], encode_seconds: float, built: _Built
) -> Manifest:
    """The manifest of a freshly built index (its files are recorded by the commit)."""
    return Manifest(
        name=name,
        dimension=int(built.faiss_index.d),
        normalized=True,
        metric="inner_product",
        count=int(built.faiss_index.ntotal),
        embedtune_version=__version__,
        created_at=now(),
        encode_seconds=round(encode_seconds, 2),
        index_type=built.spec.kind,
        index_params=built.spec.params(),
        choice=built.choice,
        train_size=built.train_size,
        build_seconds=built.seconds,
        search_defaults=built.calibration.knobs,
        calibration={k: v for k, v in asdict(built.calibration).items() if k != "knobs"},
        vectors=int(built.faiss_index.ntotal),
        **corpus,
        **identity,
    )
