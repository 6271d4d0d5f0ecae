"""Edges of the service that a plain HTTP client never reaches: bodies shorter than their Content-Length,
requests the HTTP parser refuses, values pydantic would coerce, non-finite numbers, non-ASCII API keys.

The first two talk to the server through a raw loopback socket, each read bounded by a socket timeout,
because they are about bytes that urllib would never send.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import pytest
from http_client import call

SOCKET_TIMEOUT = 10.0  # a bound on every read: a test that would hang fails instead


def _exchange(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is and read the answer until the server closes the connection."""
    address = urlparse(base)
    with socket.create_connection((address.hostname, address.port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):  # each recv is bounded by the timeout; the server closes after answering
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def test_a_body_shorter_than_its_content_length_gets_a_json_408(serve):
    base = serve(body_timeout_seconds=0.5)
    head = b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    started = time.monotonic()
    status, headers, body = _exchange(base, head + b'{"query": "web')
    assert status == 408 and headers["content-type"] == "application/json" and headers["connection"] == "close"
    answer = json.loads(body)
    assert answer["schema"] == "embedtune.error/1" and answer["status"] == 408
    assert "body_timeout_seconds" in answer["error"] and "0.5 s" in answer["error"]
    assert time.monotonic() - started < SOCKET_TIMEOUT / 2
    assert call(base, "/search", {"query": "web server", "k": 1})[0] == 200  # the service still answers


@pytest.mark.parametrize(
    ("what", "request_bytes", "words"),
    [
        (
            "malformed Content-Length",
            b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}",
            "bad Content-Length",
        ),
        ("no Host header", b"GET /health HTTP/1.1\r\n\r\n", "Host"),
        ("not HTTP", b"hello there\r\n\r\n", "request line"),
    ],
)
def test_a_request_the_http_parser_refuses_gets_a_json_400(serve, what, request_bytes, words):
    base = serve()
    status, headers, body = _exchange(base, request_bytes)
    assert status == 400 and headers["content-type"] == "application/json", (what, body)
    answer = json.loads(body)
    assert answer["schema"] == "embedtune.error/1" and answer["status"] == 400
    assert answer["error"].startswith("malformed HTTP request") and words in answer["error"], answer


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"query": "web", "k": True}, "k: Input should be a valid integer"),
        ({"query": "web", "k": 2.0}, "k: Input should be a valid integer"),
        ({"query": "web", "k": "2"}, "k: Input should be a valid integer"),
        ({"query": "web", "rerank": 1}, "rerank: Input should be a valid boolean"),
        ({"query": "web", "ef_search": True}, "ef_search: Input should be a valid integer"),
        ({"query": "web", "mode": "hybrid", "weight": True}, "weight: Input should be a valid number"),
        ({"query": "web", "min_score": False}, "min_score: Input should be a valid number"),
    ],
)
def test_numbers_and_booleans_are_taken_as_sent_not_coerced(serve, body, words):
    status, answer, _ = call(serve(), "/search", body)
    assert status == 422 and answer["error"] == words, answer


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_non_finite_min_score_is_said_to_be_one(serve, value):
    base = serve()
    status, answer, _ = call(base, "/search", raw=b'{"query": "web", "min_score": ' + value + b"}", method="POST",
                             headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 422 and answer["error"] == "min_score: Input should be a finite number", answer
    status, answer, _ = call(base, "/search?q=web&min_score=nan")
    assert status == 422 and answer["error"] == "min_score: Input should be a finite number", answer
    status, answer, _ = call(base, "/search?q=web&min_score=7")
    assert status == 422 and answer["error"].startswith("min_score: Input should be less than or equal to 1.5")
    status, answer, _ = call(base, "/search", {"query": "web", "mode": "hybrid", "weight": float("nan")})
    assert status == 422 and answer["error"] == "weight: Input should be a finite number", answer


def test_an_api_key_with_non_ascii_characters_is_compared_as_utf8(serve):
    key = "clé-secrète-à"  # ends in U+00E0 (UTF-8 C3 A0): A0 is whitespace to str.strip once read as latin-1
    base = serve(api_key=key)
    sent = key.encode("utf-8").decode("latin-1")  # http.client sends header values as latin-1: these are the bytes
    body = {"query": "web server", "k": 1}
    assert call(base, "/search", body, headers={"X-API-Key": sent})[0] == 200
    assert call(base, "/search", body, headers={"Authorization": f"Bearer {sent}"})[0] == 200
    wrong = "clé-secrète-á".encode().decode("latin-1")
    status, answer, _ = call(base, "/search", body, headers={"X-API-Key": wrong})
    assert status == 401 and answer["error"] == "wrong API key"
    latin1 = key.encode("latin-1").decode("latin-1")  # the same characters, but not their UTF-8 bytes
    assert call(base, "/search", body, headers={"X-API-Key": latin1})[0] == 401
