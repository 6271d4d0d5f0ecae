"""The shipped default dataset: loadable, honest qrels, no leakage across splits, reproducible."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from collections import defaultdict
from pathlib import Path

import pytest

from embedtune.data import SPLITS, default_data_dir, load_corpus, load_qrels, load_queries

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "datasets" / "debian-descriptions" / "descriptions.jsonl.gz"
DATA = default_data_dir()


def _jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def shipped():
    corpus, queries = load_corpus(DATA), load_queries(DATA)
    qrels = {s: load_qrels(DATA / "qrels" / f"{s}.tsv", query_ids=queries, doc_ids=corpus) for s in SPLITS}
    return corpus, queries, qrels


def test_sizes(shipped):
    corpus, queries, qrels = shipped
    assert len(corpus) > 60_000 and len(queries) > 60_000
    assert 2_000 <= len(qrels["dev"]) <= 5_000 and 2_000 <= len(qrels["test"]) <= 5_000
    assert len(qrels["train"]) > 50_000


def test_no_query_source_or_text_on_two_sides(shipped):
    _, queries, qrels = shipped
    query_split = {q: s for s in SPLITS for q in qrels[s]}
    assert len(query_split) == sum(len(qrels[s]) for s in SPLITS)  # each query in exactly one split
    docs = {d["_id"]: d for d in _jsonl(DATA / "corpus.jsonl.gz")}
    sides_of_source, sides_of_text = defaultdict(set), defaultdict(set)
    for split in SPLITS:
        for qid, relevant in qrels[split].items():
            sides_of_text[" ".join(queries[qid].lower().split())].add(split)
            for doc_id in relevant:
                for source in docs[doc_id]["metadata"]["sources"]:
                    sides_of_source[source].add(split)
    assert all(len(s) == 1 for s in sides_of_source.values())
    assert all(len(s) == 1 for s in sides_of_text.values())


def test_documents_are_distinct_texts(shipped):
    corpus, _, _ = shipped
    normalised = [" ".join(t.split()) for t in corpus.values()]
    assert len(set(normalised)) == len(normalised)


@pytest.mark.skipif(not SOURCE.is_file(), reason="the Debian dump in ../shared is not beside this checkout")
def test_build_script_reproduces_data_byte_for_byte(tmp_path):
    spec = importlib.util.spec_from_file_location("build_debian", ROOT / "data" / "build_debian.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(SOURCE, tmp_path)
    for rel in ["corpus.jsonl.gz", "queries.jsonl.gz", *(f"qrels/{s}.tsv" for s in SPLITS)]:
        built = hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
        shipped = hashlib.sha256((DATA / rel).read_bytes()).hexdigest()
        assert built == shipped, rel
