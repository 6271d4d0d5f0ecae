"""The scale-out commands from the README: build --shards/--shard, index merge, index export, search/eval a URI."""

from __future__ import annotations

import json

import pytest
from helpers import QUERIES, assert_one_line_error, run


def test_shards_built_one_per_command_merge_into_a_searchable_index(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    common = (
        "--model",
        tiny_st,
        "--corpus",
        beir_dir,
        "--indexes-dir",
        idx,
        "--name",
        "sharded",
        "--precision",
        "fp32",
    )
    out = run("index", "build", *common, "--shards", 2, "--shard", 1).output
    assert "shard 1 of 2 of index 'sharded' written" in out and "embedtune index merge sharded" in out
    assert_one_line_error(
        run("index", "merge", "sharded", "--indexes-dir", idx, ok=False), r"missing shard\(s\) 0 of 2"
    )
    shard = json.loads(run("index", "build", *common, "--shards", 2, "--shard", 0, "--json").stdout)
    assert shard["schema"] == "embedtune.index.shard/1" and shard["count"] == 4 and shard["first_fid"] == 0
    merged = json.loads(run("index", "merge", "sharded", "--indexes-dir", idx, "--type", "flat", "--json").stdout)
    assert merged["schema"] == "embedtune.index.merge/1" and merged["documents"] == 8
    hits = json.loads(run("search", "text editor", "--index", "sharded", "--indexes-dir", idx, "--json").stdout)
    assert len(hits["hits"]) == 8
    assert_one_line_error(run("index", "build", *common, "--shards", 2, ok=False), "--shards needs --shard K")
    assert_one_line_error(
        run("index", "build", *common, "--shards", 2, "--shard", 2, ok=False), r"--shard \(shard: must be below shards"
    )


def test_export_to_qdrant_then_search_and_eval_the_collection(tmp_path, tiny_st, tiny_bert, beir_dir):
    pytest.importorskip("qdrant_client")
    idx, store = tmp_path / "idx", tmp_path / "qdrant"
    run("index", "build", "--model", tiny_st, "--corpus", beir_dir, "--indexes-dir", idx, "--name", "tiny")
    exported = json.loads(run("index", "export", "tiny", "--indexes-dir", idx, "--path", store, "--json").stdout)
    uri = exported["uri"]
    assert exported["schema"] == "embedtune.index.export/1" and uri == f"qdrant://{store.resolve()}?collection=tiny"
    query = QUERIES["q-ssh"]
    faiss_hits = json.loads(run("search", query, "--index", "tiny", "--indexes-dir", idx, "--json", "-k", 3).stdout)
    qdrant_hits = json.loads(run("search", query, "--index", uri, "--json", "-k", 3).stdout)
    assert [h["id"] for h in qdrant_hits["hits"]] == [h["id"] for h in faiss_hits["hits"]]
    out = run("eval", "--index", uri, "--index", "tiny", "--indexes-dir", idx, "--data", beir_dir, "--json").stdout
    results = json.loads(out)["results"]
    assert results[0]["metrics"] == results[1]["metrics"]
    assert_one_line_error(
        run("search", query, "--index", uri, "--model", tiny_bert, ok=False), "index 'qdrant:tiny' was built by"
    )
    assert_one_line_error(
        run("index", "export", "tiny", "--indexes-dir", idx, "--path", store, ok=False), "collection already exists"
    )
    assert_one_line_error(run("index", "export", "tiny", "--indexes-dir", idx, ok=False), "give --url")
