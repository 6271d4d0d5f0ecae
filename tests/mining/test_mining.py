"""Hard-negative mining: each rule on a handmade case, the retrievers against exact search, bad input, the CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from helpers import QRELS, assert_one_line_error, run, write_beir

from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.mining import (
    MiningConfig,
    MiningInput,
    load_mining_input,
    mine,
    mine_to_file,
    report_paths,
    write_mined,
)
from embedtune.training_data import load_training_data

# One query with two positives (rows 0 and 1). Row 2 is row 0's text in other case and spacing,
# row 3 scores within 5 % of both positives, rows 5 and 6 are one text twice.
DOCS = [
    ("nginx", "Nginx web server", 0.90),
    ("apache", "Apache web server", 0.80),
    ("nginx-copy", "  NGINX   web SERVER ", 0.89),
    ("lighttpd", "Lighttpd web server", 0.88),
    ("caddy", "Caddy HTTP server", 0.70),
    ("squid", "Squid proxy", 0.60),
    ("squid-copy", "Squid proxy", 0.59),
    ("gzip", "gzip compressor", 0.10),
]


class TableRetriever:
    """A retriever whose scores are a given (query x document) table: the miner's rules see exact values."""

    name = "table"

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.asarray(table, dtype=np.float32)

    def search(self, query_rows, k):
        rows = np.argsort(-self.table[query_rows], axis=1, kind="stable")[:, :k]
        return np.take_along_axis(self.table[query_rows], rows, axis=1), rows

    def pair_scores(self, query_rows, doc_rows):
        return self.table[query_rows, doc_rows]


def handmade() -> tuple[MiningInput, TableRetriever]:
    data = MiningInput(
        doc_ids=[d for d, _, _ in DOCS],
        doc_texts=[t for _, t, _ in DOCS],
        query_ids=["q-web"],
        query_texts=["web server"],
        pair_query=[0, 0],
        pair_doc=[0, 1],
    )
    return data, TableRetriever([[s for _, _, s in DOCS]])


def config(**overrides) -> MiningConfig:
    return MiningConfig(**{"num_negatives": 2, "max_rank": 8, **overrides})


def negatives(data: MiningInput, mined) -> list[list[str]]:
    return [[data.doc_ids[r] for r in row] for row in mined.negatives]


def test_each_filter_removes_exactly_what_it_should():
    data, retriever = handmade()
    mined, report = mine(data, retriever, config(relative_margin=0.05), show_progress=False)
    # Per row: both positives (known_positive), nginx's copy (positive_duplicate, also for apache's
    # row: it copies a positive of the query), lighttpd (0.88 > 95 % of 0.90 and of 0.80), and the
    # second "Squid proxy" (repeated_text). Caddy and squid are what is left at the top.
    assert report.filtered == {
        "known_positive": 4,
        "positive_duplicate": 2,
        "max_score": 0,
        "absolute_margin": 0,
        "relative_margin": 2,
        "repeated_text": 2,
    }
    assert report.candidates_seen == 16 and report.rows_written == 2 and report.rows_short == 0
    assert negatives(data, mined) == [["caddy", "squid"], ["caddy", "squid"]]
    np.testing.assert_allclose(mined.scores, [[0.90, 0.70, 0.60], [0.80, 0.70, 0.60]], rtol=1e-6)
    assert [data.doc_ids[data.pair_doc[p]] for p in mined.pairs] == ["nginx", "apache"]


def test_margins_are_measured_against_each_rows_own_positive():
    data, retriever = handmade()
    # pos - 0.05: 0.85 for nginx's row, 0.75 for apache's. Lighttpd (0.88) goes from both rows.
    _, report = mine(data, retriever, config(relative_margin=None, absolute_margin=0.05), show_progress=False)
    assert report.filtered["absolute_margin"] == 2 and report.filtered["relative_margin"] == 0
    # pos - 0.25: 0.65 and 0.55. Lighttpd and caddy go from both rows, both squids from apache's too.
    # Short rows used to be left out: that is now short_rows="drop"; the default (pad) keeps the row
    # with its one negative repeated (tests/mining/test_short_rows.py).
    for short_rows, kept in (("drop", [["squid", "gzip"]]), ("pad", [["squid", "gzip"], ["gzip", "gzip"]])):
        settings = config(relative_margin=None, absolute_margin=0.25, short_rows=short_rows)
        mined, report = mine(data, retriever, settings, show_progress=False)
        assert report.filtered["absolute_margin"] == 2 + 4
        # Apache's row has only gzip left (one survivor of two): it is counted (and left out under drop).
        assert report.rows_short == 1 and report.available == [0, 1, 1]
        assert negatives(data, mined) == kept


def test_max_score_and_no_filters():
    data, retriever = handmade()
    _, report = mine(data, retriever, config(relative_margin=None, max_score=0.65), show_progress=False)
    # lighttpd and caddy in both rows (known positives and nginx's copy are counted as such first).
    assert report.filtered["max_score"] == 4
    mined, report = mine(data, retriever, config(relative_margin=None), show_progress=False)
    # Without the positive-aware rules the too-close candidate is the hardest negative...
    assert negatives(data, mined) == [["lighttpd", "caddy"], ["lighttpd", "caddy"]]
    # ...but a positive or a copy of one never is, whatever the settings.
    assert report.filtered["known_positive"] == 4 and report.filtered["positive_duplicate"] == 2


def test_rank_window_and_random_sampling():
    data, retriever = handmade()
    mined, report = mine(data, retriever, config(min_rank=5, relative_margin=None), show_progress=False)
    assert report.window == [5, 8] and report.candidates_seen == 8  # ranks 5..8: caddy, squid, squid-copy, gzip
    assert negatives(data, mined) == [["caddy", "squid"], ["caddy", "squid"]]

    draws = [
        negatives(data, mine(data, retriever, config(sampling="random", seed=s, max_rank=8), show_progress=False)[0])
        for s in (1, 1, 2, 3, 4)
    ]
    assert draws[0] == draws[1]  # seeded
    allowed = {"caddy", "squid", "squid-copy", "gzip"}
    for draw in draws:
        for row in draw:
            assert set(row) <= allowed and len(row) == 2 and {"squid", "squid-copy"} - set(row)
    assert len({tuple(map(tuple, d)) for d in draws}) > 1  # not always the top


def test_short_rows_are_an_error_when_they_are_most_of_the_data():
    # Only when they are to be dropped (short_rows="drop"; before, short rows were always dropped):
    # by default they are kept (tests/mining/test_short_rows.py).
    data, retriever = handmade()
    with pytest.raises(EmbedtuneError, match=r"2 of 2 rows \(100.0%\) have fewer than 3 negatives"):
        mine(data, retriever, config(num_negatives=3, min_rank=6, short_rows="drop"), show_progress=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_rank": 9, "max_rank": 3}, r"rank window is empty: min_rank 9 > max_rank 3"),
        ({"min_rank": 4, "max_rank": 4}, r"holds 1 candidates, fewer than the 2"),
        ({"relative_margin": 1.5}, r"relative_margin: must be less than 1, got 1.5"),
        ({"min_rank": 20, "max_rank": 30}, r"min_rank 20 is beyond the corpus of 8 documents"),
        ({"min_rank": 8, "max_rank": 30}, r"ranks 8..8 cannot hold 2 negatives"),
    ],
)
def test_bad_windows_are_errors(overrides, message):
    data, retriever = handmade()
    with pytest.raises(EmbedtuneError, match=message):
        mine(data, retriever, config(**overrides), show_progress=False)


def test_a_window_beyond_the_corpus_is_cut_with_a_warning():
    data, retriever = handmade()
    with pytest.warns(EmbedtuneWarning, match="max_rank 100 exceeds the corpus"):
        mined, report = mine(data, retriever, config(max_rank=100), show_progress=False)
    assert report.window == [1, 8] and len(mined.pairs) == 2
    assert any("max_rank 100 exceeds the corpus (8 documents)" in w and "all 1 queries" in w for w in report.warnings)


def test_bad_beir_input_is_counted(tmp_path):
    corpus = {"a": "alpha text", "b": "beta text", "c": "gamma text"}
    queries = {"q1": "alpha", "q2": "beta", "q3": "gamma", "q4": "delta"}
    root = write_beir(tmp_path / "one-missing", corpus, queries, {"train": [("q1", "a"), ("q2", "b"), ("q3", "zz")]})
    lines = (root / "qrels" / "train.tsv").read_text() + "q4\tc\t0\n"  # judged, but nothing relevant
    (root / "qrels" / "train.tsv").write_text(lines)
    with pytest.warns(EmbedtuneWarning, match="missing from the corpus"):
        data = load_mining_input(root, "train")
    assert len(data.pair_query) == 2
    warnings = " | ".join(data.warnings)
    assert "1 of 3 (query, positive) pairs name documents missing from the corpus (e.g. 'zz')" in warnings
    assert "1 queries have no relevant document" in warnings

    root = write_beir(tmp_path / "most-missing", corpus, queries, {"train": [("q1", "a"), ("q2", "x"), ("q3", "y")]})
    with pytest.raises(EmbedtuneError, match=r"2 of 3 \(query, positive\) pairs name documents missing"):
        load_mining_input(root, "train")


def test_output_rows_are_training_ready(tmp_path):
    data, retriever = handmade()
    mined, _ = mine(data, retriever, config(), show_progress=False)
    path = write_mined(tmp_path / "mined.jsonl.gz", data, mined)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert list(rows[0]) == [
        "query",
        "positive",
        "negative_1",
        "negative_2",
        "scores",
        "query_id",
        "positive_id",
        "negative_ids",
    ]
    assert rows[0]["positive"] == "Nginx web server" and rows[0]["negative_ids"] == ["caddy", "squid"]
    assert rows[0]["scores"] == pytest.approx([0.9, 0.7, 0.6])
    training = load_training_data(path)  # what `embedtune train --data` reads
    assert (training.format, training.teacher_scores, len(training.dataset)) == ("n-tuple", True, 2)
    assert training.text_columns == ["anchor", "positive", "negative_1", "negative_2"]


def test_mine_to_file_writes_rows_report_and_histogram(tmp_path, tiny_st, beir_dir):
    out = tmp_path / "out" / "mined.jsonl"
    selection = MiningConfig(num_negatives=2, max_rank=8, relative_margin=None)
    report = mine_to_file(beir_dir, out, model=tiny_st, config=selection, show_progress=False)
    json_path, png_path = report_paths(out)
    assert (json_path.name, png_path.name) == ("mined.report.json", "mined.report.png")
    saved = json.loads(json_path.read_text())
    assert saved["rows_written"] == report.rows_written == len(out.read_text().splitlines())
    assert saved["pairs"] == len(QRELS["train"]) and saved["filtered"]["known_positive"] == 5
    counts = saved["histograms"]["counts"]
    assert sum(counts["positive"]) == 5 and sum(counts["negative"]) == 2 * report.rows_written
    assert png_path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.parent.iterdir()) == ["mined.jsonl", "mined.report.json", "mined.report.png"]


def test_mine_cli(tmp_path, tiny_st, beir_dir):
    out = tmp_path / "mined.jsonl.gz"
    result = run("mine", "-o", out, "--data", beir_dir, "--retriever", "bm25", "--num-negatives", 2, "--max-rank", 20)
    assert "mined 5 of 5 (query, positive) rows with 2 negatives each (bm25, ranks 1..8" in result.output
    assert "warning: max_rank 20 exceeds the corpus (8 documents)" in result.output
    assert_one_line_error(run("mine", "-o", out, "--data", beir_dir, ok=False), "already exists")
    assert_one_line_error(
        run("mine", "-o", tmp_path / "x.jsonl", "--data", beir_dir, "--min-rank", 5, "--max-rank", 2, ok=False),
        "rank window is empty",
    )
    assert_one_line_error(
        run("mine", "-o", tmp_path / "x.jsonl", "--data", beir_dir, "--relative-margin", "lots", ok=False),
        "expected a number or 'none'",
    )
    result = run(
        "mine",
        "-o",
        tmp_path / "d.jsonl",
        "--data",
        beir_dir,
        "--model",
        tiny_st,
        "--relative-margin",
        "none",
        "--num-negatives",
        1,
        "--max-rank",
        8,
    )
    assert "(dense:" in result.output and "relative_margin 0" in result.output


def test_train_mine_mines_with_the_base_model_then_trains_on_the_tuples(tmp_path, tiny_st, beir_dir):
    out = tmp_path / "model"
    args = ["train", "-o", out, "--model", tiny_st, "--data", beir_dir, "--max-steps", 2, "--batch-size", 2]
    result = run(*args, "--no-dev", "--mine", "--num-negatives", 2, "--max-rank", 8, "--relative-margin", "none")
    mined = tmp_path / "model.mined.jsonl.gz"
    assert f"(dense:{tiny_st}, ranks 1..8 of 8 documents)" in result.output
    assert f"mined rows written to {mined}" in result.output and "trained 2 steps on 5 rows" in result.output
    assert (tmp_path / "model.mined.report.json").is_file() and (out / "modules.json").is_file()
    record = json.loads((out / "embedtune_train.json").read_text())
    assert str(mined) in json.dumps(record)  # the model records that it learnt from the mined rows
    without_mine = run(*args, "-o", tmp_path / "other", "--num-negatives", 3, ok=False)
    assert_one_line_error(without_mine, "only apply with --mine")


def test_train_mine_evaluates_on_the_folders_dev_split_not_a_held_out_slice(tmp_path, tiny_st, beir_dir):
    args = ["train", "-o", tmp_path / "model", "--model", tiny_st, "--data", beir_dir, "--max-steps", 2]
    result = run(*args, "--batch-size", 2, "--mine", "--max-rank", 8, "--relative-margin", "none", "--json")
    dev = json.loads(result.stdout)["choices"]["dev"]
    assert dev["value"] == str(beir_dir) and "held out" not in dev["why"]  # the qrels/dev.tsv of beir_dir
    opted_out = run(*args, "-o", tmp_path / "m2", "--mine", "--dev-split", "none", "--max-rank", 8, "--json")
    assert json.loads(opted_out.stdout)["choices"]["dev"]["value"] == "none"


def test_mine_with_a_built_index_searches_it_as_search_does(tmp_path, tiny_st, beir_dir):
    from embedtune.index import build_index

    idx = tmp_path / "indexes"
    build_index(beir_dir, "tiny", model=tiny_st, indexes_dir=idx, show_progress=False)
    common = ["--data", beir_dir, "--indexes-dir", idx, "--num-negatives", 2, "--max-rank", 8, "--relative-margin"]
    out = run("mine", "-o", tmp_path / "i.jsonl", "--index", "tiny", *common, "none").output
    assert "(index:tiny, ranks 1..8 of 8 documents)" in out
    by_model = run("mine", "-o", tmp_path / "m.jsonl", "--model", tiny_st, *common, "none").output
    assert "mined 5 of 5" in out and "mined 5 of 5" in by_model
    ids = [
        [json.loads(line)["negative_ids"] for line in (tmp_path / f).read_text().splitlines()]
        for f in ("i.jsonl", "m.jsonl")
    ]
    assert ids[0] == ids[1]  # a small index is flat and dense by default: the model's exact search

    other = write_beir(tmp_path / "other", corpus={"x": "another corpus entirely"}, qrels={"train": [("q-web", "x")]})
    wrong = run("mine", "-o", tmp_path / "w.jsonl", "--index", "tiny", *common[:-1], "--data", other, ok=False)
    assert_one_line_error(wrong, "lacks 1 of the 1 documents of the mining corpus")


def test_mining_config_refuses_bad_values_with_the_settings_message():
    from embedtune.settings import SettingError, from_mapping

    with pytest.raises(SettingError, match=r"^num_negatives: must be at least 1, got 0$"):
        MiningConfig(num_negatives=0)
    with pytest.raises(SettingError, match=r"^sampling: 'best' is not one of top, random$"):
        MiningConfig(sampling="best")
    with pytest.raises(SettingError, match=r"^relative_margin: must be at least 0, got -0.1 \(in mine.yaml\)$"):
        from_mapping(MiningConfig, {"relative_margin": -0.1}, "mine.yaml")
    assert from_mapping(MiningConfig, {"relative_margin": None, "max_rank": 8}, "mine.yaml") == MiningConfig(
        relative_margin=None, max_rank=8
    )
    config = MiningConfig()
    config.min_rank = 0  # changed after it was made: mining checks again
    data, retriever = handmade()
    with pytest.raises(SettingError, match="min_rank: must be at least 1"):
        mine(data, retriever, config, show_progress=False)
