"""A catalogue of bad requests: each gets a 4xx JSON error with a message, never a 500 or a traceback."""

from __future__ import annotations

import pytest
from http_client import call

JSON = {"Content-Type": "application/json"}
MB = 1024 * 1024

# (what, method, path, JSON body or raw bytes, extra headers, expected status, words in the message)
CATALOGUE = [
    ("malformed JSON", "POST", "/search", b'{"query": "web', JSON, 400, "malformed JSON"),
    ("not an object", "POST", "/search", b'["web server"]', JSON, 422, "valid dictionary"),
    ("no query", "POST", "/search", {"k": 3}, {}, 422, "either 'query' or 'queries'"),
    ("query and queries", "POST", "/search", {"query": "a", "queries": ["b"]}, {}, 422, "either"),
    ("empty query", "POST", "/search", {"query": "   "}, {}, 422, "empty"),
    ("query not a string", "POST", "/search", {"query": 42}, {}, 422, "query: Input should be a valid string"),
    ("k zero", "POST", "/search", {"query": "web", "k": 0}, {}, 422, "k must be between 1 and 100"),
    ("k negative", "GET", "/search?q=web&k=-3", None, {}, 422, "k must be between"),
    ("k huge", "POST", "/search", {"query": "web", "k": 10**12}, {}, 422, "k must be between 1 and 100"),
    ("k not a number", "GET", "/search?q=web&k=ten", None, {}, 422, "k: Input should be a valid integer"),
    ("GET without q", "GET", "/search", None, {}, 422, "q: Field required"),
    ("1 MB query", "POST", "/search", {"query": "a" * MB}, {}, 413, "max_body_bytes"),
    ("long query", "POST", "/search", {"query": "word " * 1000}, {}, 422, "max_text_chars"),
    ("batch too big", "POST", "/search", {"queries": ["web"] * 65}, {}, 422, "at most 64 (max_texts)"),
    ("empty batch", "POST", "/search", {"queries": []}, {}, 422, "no query given"),
    ("unknown index", "POST", "/search", {"query": "web", "index": "nope"}, {}, 404, "no index 'nope'"),
    ("path-escaping index", "POST", "/search", {"query": "web", "index": "../tiny"}, {}, 404, "no index '../tiny'"),
    ("absolute index path", "GET", "/search?q=web&index=/etc", None, {}, 404, "no index '/etc'"),
    ("unknown field", "POST", "/search", {"query": "web", "top_k": 3}, {}, 422, "top_k: Extra inputs"),
    (
        "option of another index type",
        "POST",
        "/search",
        {"query": "web", "nprobe": 4},
        {},
        400,
        "nprobe does not apply",
    ),
    ("min_score out of range", "POST", "/search", {"query": "web", "min_score": 7}, {}, 422, "min_score"),
    (
        "wrong content type",
        "POST",
        "/search",
        b"query=web",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "application/json",
    ),
    ("JSON sent as text", "POST", "/search", b'{"query": "web"}', {"Content-Type": "text/plain"}, 415, "text/plain"),
    ("embed without texts", "POST", "/embed", {"index": "tiny"}, {}, 422, "texts: Field required"),
    ("embed too many", "POST", "/embed", {"texts": ["a"] * 65}, {}, 422, "max_texts"),
    ("embed bad kind", "POST", "/embed", {"texts": ["a"], "kind": "passage"}, {}, 422, "kind"),
    ("embed invalid text", "POST", "/embed", {"texts": ["ok", "\udcff"]}, {}, 422, "text 2"),
    ("unknown endpoint", "GET", "/nowhere", None, {}, 404, "Not Found"),
    ("wrong method", "DELETE", "/search", None, {}, 405, "Method Not Allowed"),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_st):
    """One service for the whole catalogue (a bad request changes nothing)."""
    from helpers import write_beir
    from http_client import running

    from embedtune.encoding import EncodeSettings
    from embedtune.index import build_index
    from embedtune.serve import ServeSettings, create_app

    root = tmp_path_factory.mktemp("bad-requests")
    build_index(
        write_beir(root / "beir"),
        "tiny",
        model=tiny_st,
        indexes_dir=root / "indexes",
        encode=EncodeSettings(precision="fp32"),
        show_progress=False,
    )
    with running(create_app(["tiny"], root / "indexes", ServeSettings(backend="torch"))) as url:
        yield url


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "words"),
    [case[1:] for case in CATALOGUE],
    ids=[case[0] for case in CATALOGUE],
)
def test_bad_request_gets_a_json_4xx(base, method, path, body, headers, status, words):
    if isinstance(body, bytes):
        got, answer, _ = call(base, path, raw=body, method=method, headers=headers)
    else:
        got, answer, _ = call(base, path, body, method=method, headers=headers)
    assert got == status, answer
    assert isinstance(answer, dict) and words in answer["error"], answer
    assert "Traceback" not in answer["error"] and answer.get("status", status) == status


def test_the_catalogue_is_big_enough_and_the_service_still_answers(base):
    assert len(CATALOGUE) >= 15
    status, answer, _ = call(base, "/search", {"query": "web server", "k": 1})
    assert status == 200 and answer["results"][0]["hits"][0]["id"]
