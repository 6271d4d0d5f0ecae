"""The shipped zero-shot split data/stsb-retrieval: loadable, well-formed graded qrels, reproducible."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from embedtune.data import load_split

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "stsb-retrieval"
SOURCE = ROOT.parent / "shared" / "datasets" / "stsbenchmark"


def test_queries_are_corpus_sentences_with_graded_partners():
    split = load_split(DATA, "test")
    assert len(split.corpus) > 6_000 and len(split.qrels) > 1_500
    for qid, relevant in split.qrels.items():
        assert split.queries[qid] == split.corpus[qid]  # own text in the corpus: --ignore-own-id
        assert qid not in relevant and set(relevant.values()) <= {1, 2, 3}
        assert max(relevant.values()) >= 2  # every query has a partner scored >= 4


@pytest.mark.skipif(not SOURCE.is_dir(), reason="the STS Benchmark files in ../shared are not beside this checkout")
def test_build_script_reproduces_data_byte_for_byte(tmp_path):
    spec = importlib.util.spec_from_file_location("build_stsb", ROOT / "data" / "build_stsb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(SOURCE, tmp_path)
    for rel in ["corpus.jsonl.gz", "queries.jsonl.gz", "qrels/test.tsv"]:
        built = hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
        assert built == hashlib.sha256((DATA / rel).read_bytes()).hexdigest(), rel
