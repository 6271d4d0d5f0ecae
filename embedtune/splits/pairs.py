"""A (query, positive) pairs file as a retrieval split: read directly, or written as a BEIR folder.

The file is read by :func:`embedtune.training_data.load_training_data` (jsonl, csv, tsv or parquet
with query/anchor + positive [+ negative_1..n] columns), so a bad row is refused with its file,
line and field, exactly as training would refuse it. :func:`pairs_split` is the one conversion of
such rows: each distinct query text becomes a query and each distinct positive or negative text a
document; ids are hashes of the text, so the same file always gives the same ids and two files that
share a text share its id. Every (query, positive) row is a relevant pair (score 1); negatives only
join the corpus. ``embedtune split`` (:func:`pairs_to_beir`), evaluation and mining
(:func:`load_retrieval`) and training's dev set from pairs all read a pairs file through it, so they
agree on its queries, documents and ids.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from pathlib import Path

from embedtune.data import RetrievalSplit, load_split
from embedtune.errors import DataError, EmbedtuneError
from embedtune.io import atomic_directory, check_destination, check_writable, refuse_overlap
from embedtune.splits.assign import SplitSettings, assign_queries, duplicate_key
from embedtune.splits.beir import REPORT_NAME, Qrels, write_qrels, write_report
from embedtune.splits.report import SplitReport
from embedtune.training_data import TrainingData, is_beir_folder, load_training_data


def text_id(prefix: str, text: str) -> str:
    """A stable id for a text: ``prefix`` and 16 hex digits of its SHA-256 (collisions need ~4e9 texts)."""
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def pairs_split(data: TrainingData, others: Iterable[str] = (), *, name: str = "") -> RetrievalSplit:
    """The rows of ``data`` as a retrieval split (see the module docstring); ``others`` (documents of
    other rows: distractors) join the corpus after the rows' own documents, never relevant."""
    if data.format == "scored-pair":
        raise DataError(
            data.files[0],
            "scored sentence pairs (sentence1, sentence2, score) are not (query, relevant document) pairs: "
            "expected query/anchor + positive columns",
        )
    columns = {column: list(data.dataset[column]) for column in data.text_columns}
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    qrels: Qrels = {}
    for query, positive in zip(columns["anchor"], columns["positive"], strict=True):
        qid, did = text_id("q", query), text_id("d", positive)
        queries.setdefault(qid, query)
        corpus.setdefault(did, positive)
        qrels.setdefault(qid, {})[did] = 1
    for text in itertools.chain(*(columns[c] for c in data.text_columns[2:]), others):
        corpus.setdefault(text_id("d", text), text)
    return RetrievalSplit(corpus, queries, qrels, name=name)


def _read_pairs(path: Path) -> TrainingData:
    """The rows of a pairs file, checked as training checks them; a BEIR folder is refused."""
    if is_beir_folder(path):
        raise EmbedtuneError(f"{path}: a BEIR folder already, not a pairs file")
    return load_training_data(path)


def load_retrieval(data: Path, split: str) -> RetrievalSplit:
    """``split`` of the BEIR folder ``data``, or, when ``data`` is a file, its pairs as that split
    (named ``<file stem>/<split>``): what evaluation and mining read, from a folder or a pairs file alike."""
    data = Path(data)
    if not data.is_file():
        return load_split(data, split)
    return pairs_split(_read_pairs(data), name=f"{_stem(data)}/{split}")


def _stem(path: Path) -> str:
    """What names a pairs file's split in reports: ``pairs`` for ``pairs.jsonl.gz``."""
    return path.name.split(".")[0] or "pairs"


def _write_jsonl(path: Path, records: dict[str, str], *, corpus: bool) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record_id, text in records.items():
            row = {"_id": record_id, "title": "", "text": text} if corpus else {"_id": record_id, "text": text}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def pairs_to_beir(
    pairs_file: Path,
    out: Path,
    settings: SplitSettings | None = None,
    *,
    split: str = "train",
    overwrite: bool = False,
) -> SplitReport:
    """Write ``out``, a BEIR folder made from ``pairs_file`` (see the module docstring).

    With ``settings``, the queries are split as :func:`~embedtune.splits.split_beir` splits them;
    without, every pair goes to ``qrels/{split}.tsv``.
    """
    pairs_file, out = Path(pairs_file), Path(out)
    refuse_overlap(out, [pairs_file])
    check_destination(out, overwrite, made_by=REPORT_NAME)
    check_writable(out, directory=True)
    if not split.strip() or "/" in split:
        raise EmbedtuneError(f"split: not a usable qrels file name: '{split}'")
    rows = _read_pairs(pairs_file)
    pairs = pairs_split(rows)
    queries, corpus, qrels = pairs.queries, pairs.corpus, pairs.qrels
    report = SplitReport(pairs_file, out, "pairs", len(corpus), {}, pairs=len(rows.dataset), settings=settings)
    if settings is not None:
        query_docs = {q: [duplicate_key(corpus[d]) for d in docs] for q, docs in qrels.items()}
        report.assignment = assign_queries(queries, query_docs, settings)
        split_of, splits = report.assignment.split_of, list(report.assignment.targets)
    else:
        split_of, splits = dict.fromkeys(qrels, split), [split]
    with atomic_directory(out, overwrite=overwrite) as tmp:
        _write_jsonl(tmp / "corpus.jsonl", corpus, corpus=True)
        _write_jsonl(tmp / "queries.jsonl", queries, corpus=False)
        report.splits = write_qrels(tmp, qrels, split_of, splits)
        write_report(tmp, report)
    return report
