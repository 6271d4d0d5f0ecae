"""split_beir and pairs_to_beir: complete BEIR folders out, no leaks across splits, deterministic, atomic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_beir

from embedtune.data import SPLITS, load_split
from embedtune.errors import DataError, EmbedtuneError, OutputExistsError
from embedtune.splits import (
    SplitSettings,
    duplicate_key,
    load_retrieval,
    pairs_split,
    pairs_to_beir,
    split_beir,
    text_id,
)
from embedtune.training_data import load_training_data


def write_big_beir(root: Path, n: int = 120) -> Path:
    """``n`` queries over train and test qrels; queries 2k and 2k+1 share a document every 5th k,
    and every 8th query repeats the one before it with other case and punctuation."""
    corpus = {f"d{i}": f"document number {i} about topic {i}" for i in range(n)}
    queries = {f"q{i}": f"what is topic {i}" for i in range(n)}
    for i in range(8, n, 8):
        queries[f"q{i}"] = queries[f"q{i - 1}"].upper() + "?"
    rows = [(f"q{i}", f"d{i - 1 if i % 10 == 1 else i}") for i in range(n)]
    return write_beir(root, corpus, queries, {"train": rows[: n // 2], "test": rows[n // 2 :]})


def write_pairs(path: Path, n: int = 60) -> Path:
    with path.open("w") as f:
        for i in range(n):
            row = {"query": f"how to do task {i}", "positive": f"do task {i % 50} this way", "negative": f"not {i}"}
            f.write(json.dumps(row) + "\n")
    return path


def _split_texts(root: Path) -> dict[str, list[str]]:
    return {s: list(load_split(root, s).queries.values()) for s in SPLITS}


def _assert_no_leak(root: Path) -> None:
    texts = _split_texts(root)
    seen: dict[str, str] = {}
    for split, items in texts.items():
        for text in items:
            assert seen.setdefault(duplicate_key(text), split) == split, f"{text!r} on two sides"
    docs: dict[str, str] = {}
    for split in SPLITS:
        for rel in load_split(root, split).qrels.values():
            for doc in rel:
                assert docs.setdefault(doc, split) == split, f"{doc} relevant on two sides"


def test_split_beir_pools_qrels_and_writes_a_complete_folder(tmp_path):
    source = write_big_beir(tmp_path / "in")
    report = split_beir(source, tmp_path / "out", SplitSettings(seed=3))
    out = tmp_path / "out"
    assert report.pooled_from == ["train", "test"]
    assert {s: v["queries"] for s, v in report.splits.items()} == {"train": 84, "dev": 24, "test": 12}
    assert sum(v["qrels"] for v in report.splits.values()) == 120
    _assert_no_leak(out)
    assert (out / "corpus.jsonl").read_bytes() == (source / "corpus.jsonl").read_bytes()
    assert json.loads((out / "split.json").read_text())["grouping"]["documents_across_splits"] == 0
    assert report.assignment.queries_kept_together >= 2 * 12 + 14
    one = split_beir(source, tmp_path / "only-test", SplitSettings(ratios=(0.5, 0.5), source_split="test"))
    assert one.queries == 60 and set(one.splits) == {"train", "dev"}


def test_same_input_and_seed_give_the_same_bytes_in_another_process(tmp_path):
    source = write_big_beir(tmp_path / "in")
    split_beir(source, tmp_path / "a")
    code = "import sys; from embedtune.splits import split_beir; split_beir(sys.argv[1], sys.argv[2])"
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(Path(__file__).parents[2])}
    subprocess.run([sys.executable, "-c", code, str(source), str(tmp_path / "b")], check=True, env=env)
    for name in SPLITS:
        assert (tmp_path / "a/qrels" / f"{name}.tsv").read_bytes() == (
            tmp_path / "b/qrels" / f"{name}.tsv"
        ).read_bytes()


def test_pairs_file_becomes_a_beir_folder_with_text_hash_ids(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    report = pairs_to_beir(pairs, tmp_path / "whole")
    whole = load_split(tmp_path / "whole", "train")
    assert report.pairs == 60 and report.queries == 60 and report.documents == 50 + 60
    assert whole.queries[text_id("q", "how to do task 3")] == "how to do task 3"
    assert whole.qrels[text_id("q", "how to do task 53")] == {text_id("d", "do task 3 this way"): 1}
    split = pairs_to_beir(pairs, tmp_path / "split", SplitSettings())
    assert {s: v["queries"] for s, v in split.splits.items()} == {"train": 42, "dev": 12, "test": 6}
    _assert_no_leak(tmp_path / "split")  # queries i and i+50 share a positive: kept together


def test_pairs_from_csv_and_parquet(tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text("anchor,positive\n" + "".join(f"q {i},p {i}\n" for i in range(10)))
    assert pairs_to_beir(csv, tmp_path / "c", SplitSettings()).splits["test"] == {"queries": 1, "qrels": 1}
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"query": ["a", "b"], "positive": ["x", "y"]}), tmp_path / "p.parquet")
    assert pairs_to_beir(tmp_path / "p.parquet", tmp_path / "p").queries == 2


def test_a_pairs_file_is_read_as_the_split_its_beir_folder_holds(tmp_path):
    """Evaluation and mining read a pairs file directly as ``embedtune split`` would have written it."""
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    read = load_retrieval(pairs, "test")
    pairs_to_beir(pairs, tmp_path / "pairs", split="test")
    folder = load_split(tmp_path / "pairs", "test")
    assert read == folder and read.name == "pairs/test" and len(read.queries) == 60
    assert load_retrieval(tmp_path / "pairs", "test") == folder  # a folder is read as the BEIR split it is
    with pytest.raises(EmbedtuneError, match="no such dataset folder"):
        load_retrieval(tmp_path / "nowhere", "test")


def test_pairs_split_adds_distractors_never_relevant_and_refuses_scored_pairs(tmp_path):
    split = pairs_split(load_training_data(write_pairs(tmp_path / "pairs.jsonl", n=2)), ["other", "not 1"])
    assert list(split.corpus.values()) == ["do task 0 this way", "do task 1 this way", "not 0", "not 1", "other"]
    relevant = {text_id("q", f"how to do task {i}"): {text_id("d", f"do task {i} this way"): 1} for i in (0, 1)}
    assert split.qrels == relevant
    assert list(split.corpus) == [text_id("d", text) for text in split.corpus.values()]
    scored = tmp_path / "scored.jsonl"
    scored.write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n')
    with pytest.raises(DataError, match=r"scored\.jsonl: scored sentence pairs .* not \(query, relevant document\)"):
        pairs_split(load_training_data(scored))


@pytest.mark.parametrize(
    ("content", "settings", "error", "message"),
    [
        ("", None, DataError, r"pairs\.jsonl: no rows"),
        ('{"query": "a", "positive": ""}\n', None, DataError, r"pairs\.jsonl:1: field 'positive': empty"),
        ('{"sentence1": "a", "sentence2": "b", "score": 1}\n', None, DataError, r"not \(query, relevant document\)"),
        (
            "".join(f'{{"query": "q{i}", "positive": "p"}}\n' for i in range(3)),
            SplitSettings(),
            EmbedtuneError,
            r"split 'test' \(ratio 0.1\) would hold no query: 3 queries give train 2, dev 1, test 0",
        ),
    ],
)
def test_bad_pairs_are_refused_and_leave_nothing(tmp_path, content, settings, error, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(content)
    with pytest.raises(error, match=message):
        pairs_to_beir(pairs, tmp_path / "out", settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


def test_bad_beir_input_is_refused_and_leaves_nothing(tmp_path):
    empty = write_beir(tmp_path / "empty", qrels={})
    with pytest.raises(EmbedtuneError, match="no qrels/"):
        split_beir(empty, tmp_path / "out")
    unknown = write_beir(tmp_path / "unknown", qrels={"train": [("q-web", "nowhere")]})
    with pytest.raises(DataError, match=r"train\.tsv:2: field 'corpus-id': unknown document id 'nowhere'"):
        split_beir(unknown, tmp_path / "out")
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputExistsError):
        split_beir(write_big_beir(tmp_path / "big"), tmp_path / "out")
    with pytest.raises(EmbedtuneError, match=r"a file, not a BEIR folder.*pairs_to_beir"):
        split_beir(tmp_path / "big" / "corpus.jsonl", tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and not any((tmp_path / "out").iterdir())
