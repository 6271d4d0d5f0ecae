"""Readers of BEIR splits and pair files: good input loads, bad input is located by file/line/field."""

from __future__ import annotations

import gzip
import json

import pytest
from helpers import CORPUS, QRELS, QUERIES, write_beir

from embedtune.data import load_corpus, load_split
from embedtune.errors import DataError, EmbedtuneError


def test_load_split_keeps_only_the_splits_queries(beir_dir):
    split = load_split(beir_dir, "test")
    assert split.corpus == CORPUS
    assert split.queries == {"q-ssh": QUERIES["q-ssh"], "q-db": QUERIES["q-db"]}
    assert split.qrels == {"q-ssh": {"openssh": 1, "openssh-doc": 1}, "q-db": {"postgres": 1}}


def test_gzipped_files_and_titles(tmp_path):
    root = write_beir(tmp_path / "b")
    raw = (root / "corpus.jsonl").read_text()
    raw = raw.replace('"title": ""', '"title": "Title"', 1)
    with gzip.open(root / "corpus.jsonl.gz", "wt") as f:
        f.write(raw)
    (root / "corpus.jsonl").unlink()
    corpus = load_corpus(root)
    assert corpus["nginx"] == "Title " + CORPUS["nginx"]


def test_malformed_json_names_file_and_line(beir_dir):
    lines = (beir_dir / "corpus.jsonl").read_text().splitlines()
    lines[2] = '{"_id": "broken", "text": '
    (beir_dir / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: invalid JSON"):
        load_corpus(beir_dir)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "no id"}, r"corpus\.jsonl:9: field '_id': missing"),
        ({"_id": "x", "text": "   "}, r"corpus\.jsonl:9: field 'text': empty"),
        ({"_id": "x", "text": ["a"]}, r"corpus\.jsonl:9: field 'text': expected a string"),
        ({"_id": "nginx", "text": "again"}, r"corpus\.jsonl:9: field '_id': duplicate document id 'nginx'"),
    ],
)
def test_bad_corpus_rows(beir_dir, row, message):
    with (beir_dir / "corpus.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message):
        load_corpus(beir_dir)


def test_qrels_with_unknown_ids_are_errors(tmp_path):
    root = write_beir(tmp_path / "b", qrels={**QRELS, "test": [("q-ssh", "openssh"), ("q-ssh", "no-such-doc")]})
    with pytest.raises(DataError, match=r"test\.tsv:3: field 'corpus-id': unknown document id 'no-such-doc'"):
        load_split(root, "test")
    root = write_beir(tmp_path / "c", qrels={**QRELS, "test": [("q-nope", "openssh")]})
    with pytest.raises(DataError, match=r"test\.tsv:2: field 'query-id': unknown query id 'q-nope'"):
        load_split(root, "test")


def test_empty_split_and_missing_files(tmp_path):
    root = write_beir(tmp_path / "b", qrels={**QRELS, "test": []})
    with pytest.raises(DataError, match="empty split"):
        load_split(root, "test")
    with pytest.raises(EmbedtuneError, match=r"no such qrels file"):
        load_split(root, "validation")
    with pytest.raises(EmbedtuneError, match="no such dataset folder"):
        load_split(tmp_path / "missing", "test")
    (root / "queries.jsonl").unlink()
    with pytest.raises(EmbedtuneError, match=r"no queries\.jsonl or queries\.jsonl\.gz"):
        load_split(root, "train")


def test_qrels_header_and_score_checked(beir_dir):
    (beir_dir / "qrels" / "test.tsv").write_text("q-ssh\topenssh\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv:1: expected header"):
        load_split(beir_dir, "test")
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq-ssh\topenssh\thigh\n")
    with pytest.raises(DataError, match=r"test\.tsv:2: field 'score': not an integer"):
        load_split(beir_dir, "test")


def test_corpus_metadata_is_flat(tmp_path):
    from embedtune.data import iter_corpus

    row = {"_id": "0ad", "title": "", "text": "a game", "metadata": {"packages": ["0ad"], "section": "games"}}
    (tmp_path / "corpus.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({"_id": "b", "text": "t", "x": 1}))
    first, second = iter_corpus(tmp_path)
    assert first.metadata == {"packages": ["0ad"], "section": "games"}  # not {"metadata": {...}}; empty title dropped
    assert second.metadata == {"x": 1}
