"""A bounded HTTP client for the service tests (the standard library's), and an app run on a free port."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any


def call(
    base: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, Any, dict[str, str]]:
    """``(status, parsed JSON or text, headers)`` of one request; a JSON ``body`` is sent as application/json."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(base + path, data=data, headers=sent | (headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as e:
        status, payload, got = e.code, e.read(), dict(e.headers)
    text = payload.decode("utf-8")
    kind = got.get("content-type", got.get("Content-Type", ""))
    return status, (json.loads(text) if kind.startswith("application/json") else text), got


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """The app served on a thread as ``embedtune serve`` serves it, on a free loopback port, until the block ends."""
    import uvicorn

    from embedtune.serve.server import uvicorn_config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
