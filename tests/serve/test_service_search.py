"""The service answers what ``embedtune search`` answers, and its other endpoints say what they serve."""

from __future__ import annotations

import json

import numpy as np
from helpers import QUERIES, run
from http_client import call

from embedtune.retrieval import Searcher


def test_same_top_k_as_the_search_command(serve, indexes_dir, tmp_path):
    base = serve()
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    printed = run("search", "--index", "tiny", "--indexes-dir", indexes_dir, "--queries", queries, "-k", 3, "--json")
    expected = [json.loads(line) for line in printed.output.splitlines() if line.startswith("{")]
    assert len(expected) == len(QUERIES)

    status, batch, _ = call(base, "/search", {"queries": list(QUERIES.values()), "k": 3})
    assert status == 200 and batch["index"] == "tiny"
    for want, got in zip(expected, batch["results"], strict=True):
        assert got["query"] == want["query"]
        assert [(h["id"], h["score"], h["text"]) for h in got["hits"]] == [
            (h["id"], h["score"], h["text"]) for h in want["hits"]
        ]
    # One query at a time (POST and GET) gives the same hits as in the batch.
    for text, want in zip(QUERIES.values(), batch["results"], strict=True):
        status, one, _ = call(base, "/search", {"query": text, "k": 3})
        assert status == 200 and one["results"] == [want]
        status, got, _ = call(base, "/search?" + __import__("urllib.parse").parse.urlencode({"q": text, "k": 3}))
        assert status == 200 and got["results"] == [want]


def test_min_score_and_small_k(serve):
    base = serve()
    _, full, _ = call(base, "/search", {"query": "web server", "k": 8})
    scores = [h["score"] for h in full["results"][0]["hits"]]
    assert len(scores) == 8 and scores == sorted(scores, reverse=True)
    _, cut, _ = call(base, "/search", {"query": "web server", "k": 8, "min_score": scores[2] - 1e-6})
    assert [h["score"] for h in cut["results"][0]["hits"]] == scores[:3]
    _, top, _ = call(base, "/search", {"query": "web server", "k": 1})
    assert top["results"][0]["hits"] == full["results"][0]["hits"][:1]


def test_embed_gives_the_index_models_query_vectors(serve, indexes_dir):
    base = serve()
    texts = ["web server", "secure shell"]
    status, got, _ = call(base, "/embed", {"texts": texts})
    assert status == 200 and got["dimension"] == 32 and got["backend"] == "torch" and got["precision"] == "fp32"
    expected = Searcher.open("tiny", indexes_dir=indexes_dir).encode_queries(texts)
    np.testing.assert_allclose(np.array(got["vectors"]), expected, atol=1e-5)


def test_indexes_health_metrics_page_and_docs(serve):
    base = serve()
    status, listing, _ = call(base, "/indexes")
    (tiny,) = listing["indexes"]
    assert status == 200 and tiny["name"] == "tiny" and tiny["documents"] == 8 and tiny["default"]
    assert tiny["generation"] == 1 and "model" in tiny["describe"]
    assert call(base, "/health")[:2] == (200, {"status": "ok", "indexes": {"tiny": 1}, "errors": {}})
    call(base, "/search?q=editor")
    status, text, headers = call(base, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'embedtune_requests_total{endpoint="/search",status="200"} 1.0' in text
    assert "embedtune_request_seconds_bucket" in text and "embedtune_batch_texts_count 1.0" in text
    assert 'embedtune_index_generation{index="tiny"} 1.0' in text
    status, page, _ = call(base, "/")
    assert status == 200 and "<form" in page and "/static/search.js" in page
    assert call(base, "/static/search.js")[0] == 200
    assert call(base, "/docs")[0] == 200
    status, spec, _ = call(base, "/openapi.json")
    assert status == 200 and {"/search", "/embed", "/indexes", "/health", "/metrics"} <= set(spec["paths"])
