"""``embedtune split`` on a BEIR folder and a pairs file; ``eval`` and ``mine`` reading a pairs file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run, write_beir

from embedtune.data import load_split


def _pairs(path: Path, n: int = 20, negatives: bool = False) -> Path:
    with path.open("w") as f:
        for i in range(n):
            row = {"query": f"which tool does job {i}", "positive": f"tool {i} does job {i} well"}
            if negatives:
                row["negative"] = f"tool {i} is about something else"
            f.write(json.dumps(row) + "\n")
    return path


def test_split_a_beir_folder_and_a_pairs_file(tmp_path, beir_dir):
    text = run("split", beir_dir, "-o", tmp_path / "b", "--ratios", "0.6,0.2,0.2").stdout
    assert "BEIR folder, qrels train+dev+test" in text and "kept together:" in text
    assert "  test: 1 query (14.3%), 1 qrels" in text
    report = json.loads(run("split", _pairs(tmp_path / "p.jsonl"), "-o", tmp_path / "p", "--json", "--seed", 5).stdout)
    assert report["schema"] == "embedtune.split/1" and report["source"] == "pairs" and report["settings"]["seed"] == 5
    assert {s: v["queries"] for s, v in report["splits"].items()} == {"train": 14, "dev": 4, "test": 2}
    assert len(load_split(tmp_path / "p", "dev").queries) == 4
    assert "--ratios A,B,..." in run("split", "--help").stdout


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda d: _pairs(d / "in.jsonl", 0), (), r"in\.jsonl: no rows"),
        (lambda d: write_beir(d / "in", queries={}, qrels={}), (), r"queries\.jsonl: no queries"),
        (lambda d: _pairs(d / "in.jsonl"), ("--ratios", "0.7,0.2,0.2"), r"--ratios \(ratios: must sum to 1, got 1\.1"),
        (lambda d: _pairs(d / "in.jsonl"), ("--ratios", "0.7,0.4,-0.1"), r"--ratios \(ratios: must be at least 0"),
        (lambda d: _pairs(d / "in.jsonl", 3), (), r"split 'test' \(ratio 0\.1\) would hold no query: 3 queries"),
        (lambda d: _pairs(d / "in.jsonl"), ("--source-split", "dev"), r"--source-split names a qrels split"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, make, args, message):
    made = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert_one_line_error(run("split", made, "-o", tmp_path / "out", *args, ok=False), message)
    assert sorted(tmp_path.rglob("*")) == before


def test_existing_output_is_refused(tmp_path, beir_dir):
    (tmp_path / "out").mkdir()
    assert_one_line_error(
        run("split", beir_dir, "-o", tmp_path / "out", ok=False), r"out: already exists \(pass --overwrite"
    )
    assert run("split", beir_dir, "-o", tmp_path / "out", "--overwrite").exit_code == 0


def test_eval_and_mine_read_a_pairs_file(tmp_path, tiny_st):
    pairs = _pairs(tmp_path / "pairs.jsonl", negatives=True)
    result = run("eval", "--model", tiny_st, "--bm25", "--data", pairs, "--json")
    assert "a pairs file: every pair is evaluated, as split 'test'" in result.stderr
    scores = json.loads(result.stdout)["results"]
    assert [r["split"] for r in scores] == ["pairs/test", "pairs/test"]
    assert all(r["n_queries"] == 20 and r["n_documents"] == 40 for r in scores)
    assert scores[0]["metrics"]["recall@10"] > 0.9  # BM25: each query names its positive's words

    out = tmp_path / "mined.jsonl.gz"
    result = run(
        "mine", "-o", out, "--data", pairs, "--model", tiny_st, "--num-negatives", 2, "--relative-margin", "none"
    )
    assert "every pair is in split 'train'" in result.stderr
    with gzip.open(out, "rt") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) >= 1 and {"query", "positive", "negative_1", "negative_2"} <= set(rows[0])
    assert all(r["positive"] not in (r["negative_1"], r["negative_2"]) for r in rows)


def test_a_pairs_file_where_a_folder_is_needed_says_what_to_do(tmp_path):
    from embedtune.errors import EmbedtuneError

    with pytest.raises(EmbedtuneError, match=r"pairs\.jsonl: a file, not a BEIR folder .*query and positive columns"):
        load_split(_pairs(tmp_path / "pairs.jsonl"), "test")
