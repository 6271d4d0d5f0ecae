"""A (query, positive) pairs file as a BEIR folder, so that evaluation and mining can read it.

The file is read by :func:`embedtune.training_data.load_training_data` (jsonl, csv, tsv or parquet
with query/anchor + positive [+ negative_1..n] columns), so a bad row is refused with its file,
line and field, exactly as training would refuse it. Each distinct query text becomes a query and
each distinct positive or negative text a document; ids are hashes of the text, so the same file
always gives the same ids and two files that share a text share its id. Every (query, positive)
row is a relevant pair (score 1); negatives only join the corpus.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from embedtune.errors import DataError, EmbedtuneError
from embedtune.io import atomic_directory, check_destination, check_writable, refuse_overlap
from embedtune.splits.assign import SplitSettings, assign_queries, duplicate_key
from embedtune.splits.beir import REPORT_NAME, Qrels, write_qrels, write_report
from embedtune.splits.report import SplitReport


def text_id(prefix: str, text: str) -> str:
    """A stable id for a text: ``prefix`` and 16 hex digits of its SHA-256 (collisions need ~4e9 texts)."""
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _read_pairs(path: Path) -> tuple[dict[str, str], dict[str, str], Qrels, int]:
    """``(queries, corpus, qrels, rows)`` of a pairs file, ids from :func:`text_id`."""
    from embedtune.training_data import is_beir_folder, load_training_data

    if is_beir_folder(path):
        raise EmbedtuneError(f"{path}: a BEIR folder already, not a pairs file")
    data = load_training_data(path)
    if data.format == "scored-pair":
        raise DataError(
            data.files[0],
            "scored sentence pairs (sentence1, sentence2, score) are not (query, relevant document) pairs: "
            "expected query/anchor + positive columns",
        )
    columns = {name: list(data.dataset[name]) for name in data.text_columns}
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    qrels: Qrels = {}
    for i, text in enumerate(columns["anchor"]):
        qid = text_id("q", text)
        queries.setdefault(qid, text)
        did = text_id("d", columns["positive"][i])
        corpus.setdefault(did, columns["positive"][i])
        qrels.setdefault(qid, {})[did] = 1
    for name in data.text_columns[2:]:  # negatives: candidates in the corpus, never relevant
        for text in columns[name]:
            corpus.setdefault(text_id("d", text), text)
    return queries, corpus, qrels, len(columns["anchor"])


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
    queries, corpus, qrels, rows = _read_pairs(pairs_file)
    report = SplitReport(pairs_file, out, "pairs", len(corpus), {}, pairs=rows, settings=settings)
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


@contextmanager
def pairs_as_beir(pairs_file: Path, split: str) -> Iterator[SplitReport]:
    """A temporary BEIR folder holding every pair of ``pairs_file`` as ``split`` (``report.output``),
    removed on exit: how evaluation and mining read a pairs file."""
    pairs_file = Path(pairs_file)
    stem = pairs_file.name.split(".")[0] or "pairs"  # names the split in reports: "<stem>/test"
    with tempfile.TemporaryDirectory(prefix="embedtune-pairs-") as tmp:
        yield pairs_to_beir(pairs_file, Path(tmp) / stem, split=split)
