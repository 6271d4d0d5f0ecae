"""The service searches in every mode the index has and reranks with its cross-encoder, as ``search`` does."""

from __future__ import annotations

import json

import pytest
from helpers import QUERIES, run
from http_client import call

from embedtune.encoding import EncodeSettings
from embedtune.index import build_index
from embedtune.index.lexical import LexicalSettings


def _search_command(indexes_dir, tmp_path, *options) -> list[list[tuple]]:
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    printed = run(
        "search", "--index", "tiny", "--indexes-dir", indexes_dir, "--queries", queries, "-k", 3, "--json", *options
    )
    found = [json.loads(line) for line in printed.output.splitlines() if line.startswith("{")]
    return [[(h["id"], pytest.approx(h["score"], abs=1e-5)) for h in q["hits"]] for q in found]


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_mode_answers_what_the_search_command_answers(serve, indexes_dir, tmp_path, mode):
    base = serve()
    expected = _search_command(indexes_dir, tmp_path, "--mode", mode)
    status, got, _ = call(base, "/search", {"queries": list(QUERIES.values()), "k": 3, "mode": mode})
    assert status == 200 and got["mode"] == mode and got["reranked"] is False
    assert [[(h["id"], h["score"]) for h in q["hits"]] for q in got["results"]] == expected


def test_rerank_with_the_services_cross_encoder(serve, indexes_dir, tmp_path, tiny_cross_encoder):
    base = serve(rerank=tiny_cross_encoder)
    expected = _search_command(indexes_dir, tmp_path, "--rerank", tiny_cross_encoder, "--rerank-depth", 5)
    status, got, _ = call(
        base, "/search", {"queries": list(QUERIES.values()), "k": 3, "rerank": True, "rerank_depth": 5}
    )
    assert status == 200 and got["reranked"] is True
    assert [[(h["id"], h["score"]) for h in q["hits"]] for q in got["results"]] == expected
    status, plain, _ = call(base, "/search", {"query": "web server", "k": 3})
    assert status == 200 and plain["reranked"] is False  # reranking only when asked


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"query": "web server", "rerank": True}, 400, "--rerank"),  # no cross-encoder loaded
        ({"query": "web server", "rerank_depth": 5}, 422, "rerank"),
        ({"query": "web server", "mode": "sparse"}, 422, "mode"),
        ({"query": "web server", "weight": 1.5}, 422, "weight"),
    ],
)
def test_bad_mode_and_rerank_requests_are_4xx(serve, body, status, words):
    code, got, _ = call(serve(), "/search", body)
    assert code == status and got["schema"] == "embedtune.error/1" and words in got["error"]


def test_bm25_on_an_index_without_its_bm25_side_is_a_400(serve, indexes_dir, tiny_st, beir_dir):
    build_index(
        beir_dir,
        "dense-only",
        model=tiny_st,
        indexes_dir=indexes_dir,
        show_progress=False,
        encode=EncodeSettings(precision="fp32"),
        lexical=LexicalSettings(bm25=False),
    )
    base = serve("dense-only")
    code, got, _ = call(base, "/search", {"query": "web server", "mode": "hybrid"})
    assert code == 400 and "no BM25 side" in got["error"]
    assert call(base, "/search", {"query": "web server"})[0] == 200
