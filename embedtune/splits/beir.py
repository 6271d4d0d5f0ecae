"""New train/dev/test qrels for a BEIR folder: read its qrels (one split or all pooled), assign whole
queries (:mod:`embedtune.splits.assign`), write a complete BEIR folder.

The new folder is written atomically (:func:`embedtune.io.atomic_directory`): a refused or failed
split leaves nothing behind. Its corpus and queries files are hard links to the input's when the
file system allows (no copy of a large corpus), else copies; its qrels hold the relevant
(score > 0) rows only, since judged non-relevant rows mean nothing to training or evaluation here.
``split.json`` beside them records the settings and the counts, so a split can be told apart and
redone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from embedtune.data import SPLITS, iter_corpus, load_qrels, load_queries, qrels_path, require_dataset_folder
from embedtune.errors import EmbedtuneError
from embedtune.io import atomic_directory, check_destination, check_writable, refuse_overlap
from embedtune.splits.assign import Assignment, SplitSettings, assign_queries, duplicate_key
from embedtune.splits.report import SplitReport

Qrels = dict[str, dict[str, int]]
REPORT_NAME = "split.json"


def qrels_names(root: Path, source_split: str | None) -> list[str]:
    """The qrels splits to read: ``source_split``, or every ``qrels/*.tsv`` (train, dev, test first)."""
    if source_split is not None:
        return [source_split]
    found = sorted(p.stem for p in (Path(root) / "qrels").glob("*.tsv"))
    names = [s for s in SPLITS if s in found] + [s for s in found if s not in SPLITS]
    if not names:
        raise EmbedtuneError(f"{root}: no qrels/*.tsv files (expected qrels/train.tsv, dev.tsv or test.tsv)")
    return names


def _pooled_qrels(root: Path, names: list[str], queries: Mapping[str, str]) -> Qrels:
    """Each query's relevant documents over ``names``; a pair judged in two splits keeps its higher score."""
    pooled: Qrels = {}
    for name in names:
        for qid, docs in load_qrels(qrels_path(root, name), query_ids=queries).items():
            into = pooled.setdefault(qid, {})
            for doc, score in docs.items():
                into[doc] = max(score, into.get(doc, 0))
    return pooled


def _document_keys(root: Path, names: list[str], queries: Mapping[str, str], qrels: Qrels) -> tuple[dict, int]:
    """``({doc_id: duplicate_key(text)}`` for the judged documents, corpus size), streaming the corpus once.

    A judged id missing from the corpus is reported by :func:`load_qrels` at its qrels line.
    """
    judged = {doc for docs in qrels.values() for doc in docs}
    keys: dict[str, str] = {}
    size = 0
    for record in iter_corpus(root):
        size += 1
        if record.doc_id in judged:
            keys[record.doc_id] = duplicate_key(record.text)
    if len(keys) < len(judged):
        for name in names:  # relocate the first unknown id, with every qrels file's line numbers
            load_qrels(qrels_path(root, name), query_ids=queries, doc_ids=keys)
    return keys, size


def place_file(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` where the file system allows, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_qrels(folder: Path, qrels: Qrels, split_of: Mapping[str, str], splits: list[str]) -> dict[str, dict]:
    """``folder/qrels/{split}.tsv`` for each of ``splits``; returns ``{split: {"queries", "qrels"}}``."""
    (folder / "qrels").mkdir()
    sizes = {name: {"queries": 0, "qrels": 0} for name in splits}
    files = {name: (folder / "qrels" / f"{name}.tsv").open("w", encoding="utf-8") for name in splits}
    try:
        for f in files.values():
            f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            name = split_of[qid]
            sizes[name]["queries"] += 1
            sizes[name]["qrels"] += len(docs)
            files[name].writelines(f"{qid}\t{doc}\t{score}\n" for doc, score in docs.items())
    finally:
        for f in files.values():
            f.close()
    return sizes


def write_report(folder: Path, report: SplitReport) -> None:
    (folder / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")


def split_beir(
    folder: Path, out: Path, settings: SplitSettings | None = None, *, overwrite: bool = False
) -> SplitReport:
    """Write ``out``: ``folder``'s corpus and queries with new ``qrels/{train,dev,test}.tsv``.

    Queries are assigned whole, near-duplicates together, and queries sharing a relevant document
    together as far as ``settings.ratios`` allow (:func:`~embedtune.splits.assign.assign_queries`).
    ``settings.source_split`` names one qrels split to split; by default all are pooled.
    """
    settings = settings or SplitSettings()
    folder, out = require_dataset_folder(folder), Path(out)
    refuse_overlap(out, [folder])  # even with overwrite: the new folder would replace the one it is made from
    check_destination(out, overwrite, made_by=REPORT_NAME)  # refused before reading a large corpus, not after
    check_writable(out, directory=True)
    queries = load_queries(folder)
    names = qrels_names(folder, settings.source_split)
    qrels = _pooled_qrels(folder, names, queries)
    doc_keys, documents = _document_keys(folder, names, queries, qrels)
    query_docs = {q: [doc_keys[d] for d in docs] for q, docs in qrels.items()}
    assignment: Assignment = assign_queries(queries, query_docs, settings)
    report = SplitReport(folder, out, "beir", documents, {}, pooled_from=names, settings=settings)
    report.assignment = assignment
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for stem in ("corpus.jsonl", "queries.jsonl"):
            source = next(p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file())
            place_file(source, tmp / source.name)
        report.splits = write_qrels(tmp, qrels, assignment.split_of, list(assignment.targets))
        write_report(tmp, report)
    return report
