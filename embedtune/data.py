"""Reading and validating retrieval data in the BEIR layout (corpus, queries, qrels per split).

Every reader checks what it reads and reports the file, line and field of the first problem
(:class:`~embedtune.errors.DataError`), because a silent skip or a pandas traceback leaves the user
guessing which of 60,000 lines is wrong.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from embedtune.errors import DataError, EmbedtuneError
from embedtune.text import text_problem

SPLITS = ("train", "dev", "test")


DATA_ENV = "EMBEDTUNE_DATA"


def default_data_dir() -> Path:
    """The default dataset (Debian package descriptions): ``$EMBEDTUNE_DATA``, else ``data/debian`` of
    the source checkout this package runs from.

    An installed wheel carries no dataset; then this raises, saying where it looked, rather than
    returning a path that does not exist.
    """
    candidates = [Path(os.environ[DATA_ENV]).expanduser()] if os.environ.get(DATA_ENV) else []
    candidates.append(Path(__file__).resolve().parent.parent / "data" / "debian")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise EmbedtuneError(
        f"no default dataset: looked in {' and '.join(map(str, candidates))}; give a BEIR folder as data "
        f"(or set ${DATA_ENV})"
    )


_READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError; a truncated .gz an EOFError

# Compressions embedtune does not read, by their magic bytes: (magic, name, command that decompresses,
# suffix). bzip2's is checked up to its block magic, so a text that starts with "BZh" is still text.
_COMPRESSIONS = (
    (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd", "zstd -d", ".zst"),
    (re.compile(rb"\xfd7zXZ\x00"), "xz", "xz -d", ".xz"),
    (re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)"), "bzip2", "bzip2 -d", ".bz2"),
    (re.compile(rb"\x04\x22\x4d\x18"), "lz4", "lz4 -d", ".lz4"),
    (re.compile(rb"PK\x03\x04"), "zip", "unzip", ".zip"),
)


def _check_compression(path: Path) -> None:
    """Refuse a file compressed other than with gzip, by its first bytes (whatever its name): read as
    text it would be reported as invalid UTF-8 somewhere in line 1, which sends the user looking for
    a bad character."""
    try:
        with path.open("rb") as f:
            head = f.read(10)
    except OSError:
        return  # the reader reports it
    for magic, name, command, suffix in _COMPRESSIONS:
        if magic.match(head):
            plain = path.name.removesuffix(suffix)
            raise DataError(
                path,
                f"compressed with {name}, which embedtune does not read: decompress it ({command} {path}) "
                f"or give {plain} or {plain}.gz",
            )


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of a (possibly gzipped) UTF-8 file, newline stripped.

    Bytes are decoded line by line, so invalid UTF-8 is an error naming its line; a file named
    ``.gz`` that is not gzip, or a truncated one, is a one-line error naming the file, and so is a
    file compressed with zstd, xz, bzip2, lz4 or zip. A BOM at the start of the file is dropped.
    """
    path = Path(path)
    _check_compression(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(path, f"invalid UTF-8 (byte {e.start + 1} of the line)", line=line_no) from e
                yield line_no, text.rstrip("\r\n")
    except _READ_ERRORS as e:
        raise DataError(path, f"cannot read file ({e or type(e).__name__})") from e


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; malformed lines are located errors."""
    for line_no, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, f"invalid JSON ({e.msg})", line=line_no) from e
        if not isinstance(obj, dict):
            raise DataError(path, "expected a JSON object", line=line_no)
        yield line_no, obj


def _string_field(path: Path, line: int, obj: dict, name: str, *, allow_empty: bool = False) -> str:
    if name not in obj:
        raise DataError(path, "missing", line=line, field=name)
    value = obj[name]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # numeric ids are common in BEIR files
    if not isinstance(value, str):
        raise DataError(path, f"expected a string, got {type(value).__name__}", line=line, field=name)
    problem = text_problem(value)
    if problem is not None and (problem != "empty" or not allow_empty):
        raise DataError(path, problem, line=line, field=name)
    return value


def find_data_file(directory: Path, stem: str) -> Path:
    """Locate ``stem`` or ``stem.gz`` in ``directory`` (BEIR files may be gzipped)."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
        if candidate.is_dir():
            raise EmbedtuneError(f"{candidate}: a folder, not a file (expected the {stem} file of a BEIR folder)")
    raise EmbedtuneError(f"{directory}: no {stem} or {stem}.gz (expected a BEIR-layout folder)")


def _load_by_id(path: Path, stem: str, what: str, text_of) -> dict[str, str]:
    """Read ``{_id: text_of(row)}`` from a BEIR jsonl file (or the ``stem`` file of a folder)."""
    path = Path(path)
    if path.is_dir():
        path = find_data_file(path, stem)
    records: dict[str, str] = {}
    for line, obj in read_jsonl(path):
        record_id = _string_field(path, line, obj, "_id")
        if record_id in records:
            raise DataError(path, f"duplicate {what} id '{record_id}'", line=line, field="_id")
        records[record_id] = text_of(path, line, obj)
    if not records:
        raise DataError(path, "no queries" if what == "query" else f"no {what}s")
    return records


def _document_text(path: Path, line: int, obj: dict) -> str:
    text = _string_field(path, line, obj, "text")
    title = _string_field(path, line, obj, "title", allow_empty=True) if "title" in obj else ""
    return f"{title.strip()} {text.strip()}".strip()


def load_corpus(path: Path) -> dict[str, str]:
    """Read a BEIR corpus (``_id``, ``title``, ``text``) into ``{doc_id: text}`` in file order.

    The title, when present, is prepended to the text as BEIR's dense retrievers do.
    """
    return _load_by_id(path, "corpus.jsonl", "document", _document_text)


@dataclass(frozen=True)
class CorpusRecord:
    """One document of a corpus file, with where it came from and its fields other than ``_id``/``text``."""

    line: int
    doc_id: str
    text: str
    metadata: dict


def corpus_file(path: Path) -> Path:
    """The corpus.jsonl[.gz] of a BEIR folder, or ``path`` itself when it is a file."""
    path = Path(path)
    return find_data_file(path, "corpus.jsonl") if path.is_dir() else path


def iter_corpus(path: Path) -> Iterator[CorpusRecord]:
    """Stream a BEIR corpus one validated document at a time (for corpora too big to hold as a dict).

    Texts are built as :func:`load_corpus` builds them; duplicate ids are the caller's to detect,
    since only it knows which ids it has already kept.
    """
    path = corpus_file(path)
    for line, obj in read_jsonl(path):
        doc_id = _string_field(path, line, obj, "_id")
        yield CorpusRecord(line, doc_id, _document_text(path, line, obj), _metadata(obj))


_EMPTY = ("", None, {}, [])


def _metadata(obj: dict) -> dict:
    """A document's fields other than ``_id``/``text``, flat: a BEIR ``metadata`` object's keys are
    lifted to the top (beside ``title``, which wins a clash), not nested as ``{"metadata": {...}}``;
    empty values are dropped."""
    nested = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    top = {k: v for k, v in obj.items() if not (k == "metadata" and isinstance(v, dict))}
    fields = {**nested, **{k: v for k, v in top.items() if v not in _EMPTY}}
    return {k: v for k, v in fields.items() if k not in ("_id", "text") and v not in _EMPTY}


def count_lines(path: Path) -> int:
    """Lines in a (possibly gzipped) text file: a cheap total for a progress bar.

    Bytes are counted, not decoded (the validated reader locates bad text); a file that cannot be
    read at all is a one-line :class:`DataError` here, before any work.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except _READ_ERRORS as e:
        raise DataError(path, f"cannot read file ({e or type(e).__name__})") from e


def load_queries(path: Path) -> dict[str, str]:
    """Read BEIR queries (``_id``, ``text``) into ``{query_id: text}``."""
    return _load_by_id(path, "queries.jsonl", "query", lambda p, line, obj: _string_field(p, line, obj, "text"))


def load_qrels(
    path: Path, *, query_ids: set[str] | dict | None = None, doc_ids: set[str] | dict | None = None
) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (header ``query-id corpus-id score``) into ``{qid: {doc_id: score}}``.

    Ids not present in ``query_ids`` / ``doc_ids`` (when given) are errors: a qrel that points
    nowhere would silently count as a miss and make every metric look worse than it is. The error
    locates the first such row and counts them all, so one run shows the size of the mismatch.
    Rows with score <= 0 are kept out: they mark judged non-relevant documents. A pair graded twice
    with different scores is an error naming both lines: which grade counts would be an accident of
    the file's order.
    """
    path = Path(path)
    if path.is_dir():
        raise EmbedtuneError(f"{path}: a folder, not a qrels file (expected a TSV file: query-id, corpus-id, score)")
    if not path.is_file():
        raise EmbedtuneError(f"{path}: no such qrels file")
    qrels: dict[str, dict[str, int]] = {}
    graded: dict[tuple[str, str], tuple[int, int]] = {}  # (query, document) -> (line, score)
    unknown: dict[str, list[tuple[int, str]]] = {"query-id": [], "corpus-id": []}  # field -> (line, id)
    reader = csv.reader((text for _, text in read_lines(path)), delimiter="\t")
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
        raise DataError(path, "expected header 'query-id<TAB>corpus-id<TAB>score'", line=1)
    for line, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 3:
            raise DataError(path, f"expected 3 tab-separated columns, got {len(row)}", line=line)
        qid, did, score_text = row[0].strip(), row[1].strip(), row[2].strip()
        try:
            score = int(score_text)
        except ValueError as e:
            raise DataError(path, f"not an integer: '{score_text}'", line=line, field="score") from e
        first_line, first_score = graded.setdefault((qid, did), (line, score))
        if first_score != score:
            raise DataError(
                path,
                f"query '{qid}' and document '{did}' graded {score} here but {first_score} at line {first_line}: "
                "give each pair one grade",
                line=line,
                field="score",
            )
        if query_ids is not None and qid not in query_ids:
            unknown["query-id"].append((line, qid))
        if doc_ids is not None and did not in doc_ids:
            unknown["corpus-id"].append((line, did))
        if score > 0:
            qrels.setdefault(qid, {})[did] = score
    if unknown["query-id"] or unknown["corpus-id"]:
        field_name = min(unknown, key=lambda f: unknown[f][0][0] if unknown[f] else float("inf"))
        line, bad_id = unknown[field_name][0]
        what = "query" if field_name == "query-id" else "document"
        counts = (
            f"{len(unknown['query-id'])} row(s) name unknown queries, {len(unknown['corpus-id'])} unknown documents"
        )
        raise DataError(path, f"unknown {what} id '{bad_id}' (in all: {counts})", line=line, field=field_name)
    if not qrels:
        raise DataError(path, "empty split: no relevant (score > 0) query-document pairs")
    return qrels


@dataclass
class RetrievalSplit:
    """Queries, the corpus they are ranked against, and their graded qrels (``{query_id: {doc_id: grade}}``).

    The one type of a set to rank and score: a BEIR folder's split (:func:`load_split`), a pairs file
    read as one (:func:`embedtune.splits.load_retrieval`), training's dev set (a sample of either).
    Evaluation scores it and the dev evaluation ranks it, so both read the same three mappings;
    retrievers take its corpus and queries by position (:class:`embedtune.retrieval.RetrievalInput`).
    ``name`` labels it in reports (``debian/test``).
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(repr=False)
    name: str = ""


def qrels_path(root: Path, split: str) -> Path:
    return Path(root) / "qrels" / f"{split}.tsv"


def require_dataset_folder(root: Path) -> Path:
    """``root`` if it is a folder; else an error that, for a file, says what a pairs file needs.

    A pairs file passed where a BEIR folder is expected is a common mistake; "no such folder" would
    send the user looking for a path that is right there.
    """
    root = Path(root)
    if root.is_file():
        raise EmbedtuneError(
            f"{root}: a file, not a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); a pairs file "
            "(.jsonl/.csv/.tsv/.parquet with query and positive columns) is read by embedtune.splits.load_retrieval "
            "or made one by embedtune.splits.pairs_to_beir"
        )
    if not root.is_dir():
        raise EmbedtuneError(f"{root}: no such dataset folder")
    return root


def load_split(root: Path, split: str, corpus: dict[str, str] | None = None) -> RetrievalSplit:
    """Load ``root``'s corpus, queries and ``qrels/{split}.tsv``, keeping only the split's queries.

    ``corpus`` may be passed in when the caller already has it (an index's stored texts).
    """
    root = require_dataset_folder(root)
    queries = load_queries(root)
    corpus = load_corpus(root) if corpus is None else corpus
    qrels = load_qrels(qrels_path(root, split), query_ids=queries, doc_ids=corpus)
    return RetrievalSplit(corpus, {q: queries[q] for q in qrels}, qrels, name=f"{root.name}/{split}")


def read_query_file(path: Path) -> list[tuple[str | None, str]]:
    """(id, text) pairs from a jsonl file (BEIR queries work) or a plain-text file of one query per line."""
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        queries = []
        for line, row in read_jsonl(path):
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                raise DataError(path, "missing or empty", line=line, field="text")
            if (problem := text_problem(text)) is not None:
                raise DataError(path, problem, line=line, field="text")
            query_id = row.get("_id", row.get("id"))
            queries.append((None if query_id is None else str(query_id), text))
    else:
        queries = [(None, text) for _, text in plain_lines(path)]
    if not queries:
        raise DataError(path, "no queries")
    return queries


def plain_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` of the non-blank lines of a plain-text file, stripped and checked as texts
    (queries, ids and texts to encode are all read this way)."""
    for line, text in read_lines(path):
        if text.strip():
            if (problem := text_problem(text)) is not None:
                raise DataError(path, problem, line=line)
            yield line, text.strip()


def read_id_file(path: Path) -> list[str]:
    """Document ids, one per line (blank lines skipped), from a (possibly gzipped) UTF-8 file."""
    ids = [text for _, text in plain_lines(Path(path))]
    if not ids:
        raise DataError(path, "no ids")
    return ids
