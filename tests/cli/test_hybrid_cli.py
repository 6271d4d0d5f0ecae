"""search / eval / index calibrate / mine in hybrid and reranked modes, and their one-line errors."""

from __future__ import annotations

import json

from helpers import QRELS, assert_one_line_error, run, write_beir


def _index(tmp_path, tiny_st, beir_dir, *extra):
    idx = tmp_path / "indexes"
    run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--name", "t", "--indexes-dir", idx, "-q", *extra)
    return idx


def test_search_in_every_mode_with_rerank_and_latency(tmp_path, tiny_st, tiny_cross_encoder, beir_dir):
    idx = _index(tmp_path, tiny_st, beir_dir)
    for mode in ("dense", "bm25", "hybrid"):
        out = json.loads(
            run(
                "search", "secure shell", "--index", "t", "--indexes-dir", idx, "--mode", mode, "-k", "2", "--json"
            ).stdout
        )
        assert out["mode"] == mode and len(out["hits"]) == 2 and out["ms_per_query"] >= 0
    out = json.loads(run("search", "secure shell", "--index", "t", "--indexes-dir", idx, "--json").stdout)
    assert out["mode"] == "dense" and not out["reranked"]
    out = run(
        "search",
        "secure shell",
        "--index",
        "t",
        "--indexes-dir",
        idx,
        "--mode",
        "hybrid",
        "--rerank",
        tiny_cross_encoder,
        "--rerank-depth",
        "5",
        "-k",
        "3",
        "--json",
    ).stdout
    assert json.loads(out)["reranked"] and len(json.loads(out)["hits"]) == 3


def test_bad_search_inputs_are_one_line_errors(tmp_path, tiny_st, beir_dir):
    idx = _index(tmp_path, tiny_st, beir_dir, "--no-bm25")
    base = ("search", "web", "--index", "t", "--indexes-dir", idx)
    assert_one_line_error(run(*base, "--mode", "hybrid", ok=False), "has no BM25 side")
    assert_one_line_error(run(*base, "--mode", "fuzzy", ok=False), "mode: 'fuzzy' is not one of dense, bm25, hybrid")
    assert_one_line_error(run(*base, "--rerank", tiny_st, ok=False), "not a cross-encoder")
    assert_one_line_error(
        run(*base, "--rerank", tiny_st, "--rerank-depth", "5", "-k", "10", ok=False),
        r"rerank_depth \(5\) must be at least k \(10\)",
    )
    assert_one_line_error(run(*base, "--fusion-weight", "1.5", ok=False), "weight: must be at most 1")
    assert_one_line_error(run("eval", "--bm25", "--mode", "bm25", "--data", tmp_path, ok=False), "apply to --index")


def test_calibrate_then_info_and_eval_side_by_side(tmp_path, tiny_st, tiny_cross_encoder):
    beir = write_beir(tmp_path / "beir", qrels=dict(QRELS, dev=QRELS["train"] + QRELS["dev"]))
    idx = _index(tmp_path, tiny_st, beir)
    out = json.loads(run("index", "calibrate", "t", "--data", beir, "--indexes-dir", idx, "--json").stdout)
    assert out["schema"] == "embedtune.index.calibrate/1" and out["split"] == "dev" and out["queries"] == 6
    assert set(out["ndcg_at_10"]) == {"dense", "bm25", "minmax", "zscore", "rrf", "hybrid"}
    info = run("index", "info", "t", "--indexes-dir", idx).stdout
    assert "nDCG@10 on dev" in info and f"default {out['default_mode']}" in info
    assert_one_line_error(
        run("index", "calibrate", "t", "--data", beir, "--split", "test", "--indexes-dir", idx, ok=False),
        "must not tune",
    )
    report = json.loads(
        run(
            "eval",
            "--index",
            "t",
            "--indexes-dir",
            idx,
            "--data",
            beir,
            "--mode",
            "dense",
            "--mode",
            "bm25",
            "--mode",
            "hybrid",
            "--json",
        ).stdout
    )
    assert [r["system"] for r in report["results"]] == ["index:t:dense", "index:t:bm25", "index:t:hybrid"]
    default = json.loads(run("eval", "--index", "t", "--indexes-dir", idx, "--data", beir, "--json").stdout)
    mode = out["default_mode"]
    assert default["results"][0]["system"] == ("index:t" if mode == "dense" else f"index:t:{mode}")
    reranked = json.loads(
        run(
            "eval", "--index", "t", "--indexes-dir", idx, "--data", beir, "--rerank", tiny_cross_encoder, "--json"
        ).stdout
    )
    assert reranked["results"][0]["system"] == f"index:t:{out['default_mode']}+rerank"
    built = run(
        "index",
        "build",
        "-m",
        tiny_st,
        "--corpus",
        beir,
        "--name",
        "t2",
        "--indexes-dir",
        idx,
        "--calibrate",
        "dev",
        "--json",
    )
    assert json.loads(built.stdout)["manifest"]["query_calibration"]["ndcg_at_10"] == out["ndcg_at_10"]


def test_mine_with_a_cross_encoder_scorer_writes_the_teachers_scores(tmp_path, tiny_st, tiny_cross_encoder, beir_dir):
    from embedtune.retrieval import Reranker

    out = tmp_path / "mined.jsonl"
    run(
        "mine",
        "-o",
        out,
        "--data",
        beir_dir,
        "-m",
        tiny_st,
        "--scorer",
        tiny_cross_encoder,
        "--num-negatives",
        "2",
        "--max-rank",
        "6",
        "--relative-margin",
        "none",
        "-q",
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    teacher = Reranker(tiny_cross_encoder)
    for row in rows:
        texts = [row["positive"], row["negative_1"], row["negative_2"]]
        expected = teacher.score([row["query"]] * 3, texts)
        assert [round(float(s), 4) for s in expected] == [round(s, 4) for s in row["scores"]]
    report = json.loads((tmp_path / "mined.report.json").read_text())
    assert "scorer:" in report["retriever"]
    assert_one_line_error(
        run("mine", "-o", tmp_path / "x.jsonl", "--data", beir_dir, "-m", tiny_st, "--scorer", tiny_st, ok=False),
        "not a cross-encoder",
    )


def test_search_encodes_a_single_query_with_openvino_and_a_batch_with_torch(tmp_path, tiny_st, beir_dir):
    """--backend auto: OpenVINO answers one query (least per-call overhead), torch's bf16 path a batch."""
    import pytest

    pytest.importorskip("openvino")
    idx = _index(tmp_path, tiny_st, beir_dir)
    base = ("search", "--index", "t", "--indexes-dir", idx, "-k", "3", "--json")
    single = json.loads(run(*base, "secure shell").stdout)
    assert single["encoder"]["backend"] == "openvino"
    queries = tmp_path / "q.txt"
    queries.write_text("secure shell\n")
    batch = json.loads(run(*base, "--queries", queries).stdout.splitlines()[0])
    assert batch["encoder"]["backend"] == "torch"
    forced = json.loads(run(*base, "--backend", "torch", "secure shell").stdout)
    assert forced["encoder"]["backend"] == "torch"
    # the same documents, whichever backend encoded the query
    assert [h["id"] for h in single["hits"]] == [h["id"] for h in forced["hits"]] == [h["id"] for h in batch["hits"]]
    for ov, pt in zip(single["hits"], forced["hits"], strict=True):
        assert abs(ov["score"] - pt["score"]) < 5e-3
