"""Encoding a file of texts into a file of vectors: what ``embedtune encode`` does, for any program.

Inputs are read with the located errors of :mod:`embedtune.data`: a plain text file (one text per
non-blank line), a ``.jsonl`` file of objects with ``text`` (``title`` prepended when present, as in a
BEIR corpus; ``_id`` or ``id`` optional), or a BEIR folder's corpus (read as ``index build`` reads it,
``_id`` required, so a folder gives the ids and texts its index holds). Every text keeps an id: its own,
else its line number, so a vector can always be traced back to its line. Duplicate ids are refused,
since a reader that maps ids to vectors would silently keep one of them.

Outputs are chosen by suffix: ``.npy`` (float32, one row per text) with the ids beside it in
``<name>.ids.json``, or ``.parquet`` with columns ``id`` and ``vector`` (a fixed-size list of float32).
Each file is written to a temporary name and the two are committed as one set
(:func:`embedtune.io.atomic_files`), so a killed run or a full disk never leaves a half-written file
under the name a reader opens, nor new ids beside old vectors. The output is checked before
the model is loaded, not after the encoding: writable, not there already (unless replacing it was
asked for), and neither the input nor inside it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedtune.data import corpus_file, iter_corpus, plain_lines, read_jsonl
from embedtune.encoding.config import EncodeSettings
from embedtune.errors import DataError, EmbedtuneError
from embedtune.io import (
    atomic_file,
    atomic_files,
    check_destination,
    check_writable,
    fsync_path,
    refuse_overlap,
)
from embedtune.text import text_problem

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

OUTPUT_SUFFIXES = (".npy", ".parquet")
PROMPTS = ("query", "document", "none")
_NOT_TEXT = (".json", ".csv", ".tsv", ".parquet", ".npy")  # structured files that would encode as junk lines


@dataclass(frozen=True)
class Texts:
    """Texts to encode with their ids, and the shape of file they came from (``text``, ``jsonl``, ``beir``)."""

    ids: list[str]
    texts: list[str]
    kind: str


@dataclass(frozen=True)
class EncodedFile:
    """What :func:`encode_file` wrote."""

    source: Path
    output: Path
    ids_path: Path | None  # None for parquet, which holds its ids
    count: int
    dimension: int
    input_kind: str
    prompt_name: str | None  # the model's prompt that was prepended, if any
    precision: str
    seconds: float


def read_texts(path: str | Path) -> Texts:
    """The texts of a plain text file, a ``.jsonl`` file or a BEIR folder (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise EmbedtuneError(f"{path}: no such file or folder")
    if path.is_dir():
        texts = _corpus_texts(corpus_file(path))
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        texts = _jsonl_texts(path)
    elif path.name.removesuffix(".gz").endswith(_NOT_TEXT):
        raise EmbedtuneError(
            f"{path}: not a file of texts; give a .jsonl file (text, optional _id or id), a plain text file "
            "(one text per line) or a BEIR folder"
        )
    else:
        texts = _plain_texts(path)
    if not texts.texts:
        raise DataError(path, "no texts")
    return texts


def _plain_texts(path: Path) -> Texts:
    lines = list(plain_lines(path))
    return Texts([str(line) for line, _ in lines], [text for _, text in lines], "text")


def _string(path: Path, line: int, row: dict, name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # numeric ids are common
    if not isinstance(value, str):
        raise DataError(path, f"expected a string, got {type(value).__name__}", line=line, field=name)
    return value


def _corpus_texts(path: Path) -> Texts:
    """A BEIR corpus read as ``index build`` reads it (:func:`~embedtune.data.iter_corpus`: ``_id``
    required), so the vectors and ids of a folder are the ones its index would hold."""
    ids, texts, seen = [], [], set()
    for record in iter_corpus(path):
        if record.doc_id in seen:
            raise DataError(path, f"duplicate id '{record.doc_id}'", line=record.line, field="_id")
        seen.add(record.doc_id)
        ids.append(record.doc_id)
        texts.append(record.text)
    return Texts(ids, texts, "beir")


def _jsonl_texts(path: Path) -> Texts:
    ids, texts, seen = [], [], set()
    for line, row in read_jsonl(path):
        text = _string(path, line, row, "text")
        if text is None or (problem := text_problem(text)) == "empty":
            raise DataError(path, "missing or empty", line=line, field="text")
        if problem is not None:
            raise DataError(path, problem, line=line, field="text")
        title = _string(path, line, row, "title") or ""
        if title and (problem := text_problem(title)) not in (None, "empty"):
            raise DataError(path, problem, line=line, field="title")
        id_field = "_id" if "_id" in row else "id"
        doc_id = _string(path, line, row, id_field)
        doc_id = str(line) if doc_id is None else doc_id
        if doc_id in seen:
            raise DataError(path, f"duplicate id '{doc_id}'", line=line, field=id_field)
        seen.add(doc_id)
        ids.append(doc_id)
        texts.append(f"{title.strip()} {text.strip()}".strip())
    return Texts(ids, texts, "jsonl")


def ids_path_for(output: Path) -> Path | None:
    """Where the ids of ``output`` go: ``vectors.npy`` -> ``vectors.ids.json``; parquet holds its own."""
    output = Path(output)
    return output.with_name(output.name.removesuffix(".npy") + ".ids.json") if output.suffix == ".npy" else None


def _check_output(output: Path, overwrite: bool, inputs: list[Path]) -> None:
    if output.suffix not in OUTPUT_SUFFIXES:
        raise EmbedtuneError(f"{output}: the vectors file must end in {' or '.join(OUTPUT_SUFFIXES)}")
    for path in filter(None, (output, ids_path_for(output))):
        refuse_overlap(path, inputs)
        check_destination(path, overwrite)
        check_writable(path)


def _prompt_name(model: SentenceTransformer, prompt: str) -> str | None:
    from embedtune.encoding.encoder import prompt_names

    query, document = prompt_names(model)
    return {"query": query, "document": document, "none": None}[prompt]


def encode_file(
    source: str | Path,
    output: str | Path,
    *,
    model: str | Path | None = None,
    prompt: str = "document",
    settings: EncodeSettings | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> EncodedFile:
    """Encode the texts of ``source`` with ``model`` and write the vectors and ids to ``output``.

    ``prompt`` picks the model's ``query`` or ``document`` prompt (prepended when the model has one,
    as search and index build do) or ``none``. Vectors are exactly :meth:`Encoder.encode`'s.
    """
    from embedtune.encoding.encoder import make_encoder
    from embedtune.models import load_model, resolve_model_path

    settings = settings or EncodeSettings()
    source, output = Path(source), Path(output)
    if prompt not in PROMPTS:  # before minutes of loading, as every bad parameter
        raise EmbedtuneError(f"prompt must be one of {', '.join(PROMPTS)}, got '{prompt}'")
    local_model = [Path(model)] if isinstance(model, (str, Path)) and Path(model).exists() else []
    _check_output(output, overwrite, [source, *local_model])
    texts = read_texts(source)
    st = load_model(resolve_model_path(model), max_seq_length=settings.max_seq_length)
    encoder = make_encoder(
        st, settings.precision, backend=settings.backend, workload=len(texts.texts), cache=settings.cache
    )
    prompt_name = _prompt_name(st, prompt)
    started = time.perf_counter()
    vectors = encoder.encode(
        texts.texts,
        batch_size=settings.batch_size,
        show_progress=show_progress,
        prompt_name=prompt_name,
        desc=f"encoding {source.name}",
    )
    seconds = time.perf_counter() - started
    write_vectors(output, texts.ids, vectors)
    return EncodedFile(
        source=source,
        output=output,
        ids_path=ids_path_for(output),
        count=len(texts.ids),
        dimension=int(vectors.shape[1]),
        input_kind=texts.kind,
        prompt_name=prompt_name,
        precision=encoder.precision,
        seconds=round(seconds, 2),
    )


def write_vectors(output: str | Path, ids: list[str], vectors: np.ndarray) -> None:
    """Write ``vectors`` (one row per id) to ``output`` by its suffix, atomically (the module docstring)."""
    output = Path(output)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(ids) != len(vectors):
        raise EmbedtuneError(f"{len(ids)} ids for {len(vectors)} vectors")
    if output.suffix == ".parquet":
        _write_parquet(output, ids, vectors)
    elif (ids_path := ids_path_for(output)) is not None:
        # One output set (embedtune.io.atomic_files): a failure (a full disk) leaves both previous files,
        # a kill both previous or both new (its commit finished by the next write), never new ids beside
        # old vectors.
        with atomic_files(output, ids_path) as (vectors_tmp, ids_tmp):
            with vectors_tmp.open("wb") as f:
                # np.save's own write (ndarray.tofile) reports a full disk without its errno: write the
                # .npy header and the rows (contiguous float32, no copy) through the Python file instead.
                np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(vectors))
                f.write(memoryview(vectors).cast("B"))
            ids_tmp.write_text(json.dumps(ids, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        raise EmbedtuneError(f"{output}: the vectors file must end in {' or '.join(OUTPUT_SUFFIXES)}")


def _write_parquet(output: Path, ids: list[str], vectors: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(vectors.ravel(), type=pa.float32())  # no copy of a contiguous float32 array
    column = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    table = pa.table({"id": pa.array(ids, type=pa.string()), "vector": column})
    with atomic_file(output) as tmp:
        pq.write_table(table, tmp)
        fsync_path(tmp)
