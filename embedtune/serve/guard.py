"""What every request passes before an endpoint sees it: the API key, the content type, the body size.

A pure ASGI middleware, so that it also guards what FastAPI answers by itself and can refuse a body
while it streams in, before it is read whole.

Failures designed out:

* **Connections held by a body that never ends.** A body must arrive whole within
  ``body_timeout_seconds`` of the request (a deadline for the whole body, not per chunk, so a
  client trickling a byte at a time cannot stretch it); else the answer is 408 and the connection is
  closed. Uvicorn has no such timeout: a body shorter than its ``Content-Length`` would be waited for
  as long as the client keeps the connection open.
* **Memory exhausted by one request.** A body over ``max_body_bytes`` is refused with 413 from its
  ``Content-Length``, or, for a chunked body without one, as soon as the bytes received pass the
  limit; it is never buffered past it. (Bodies are read here, whole, and replayed to the app: they
  are small by this limit, and a refusal raised inside the app would reach the client as a 500.)
* **Guessable keys by timing.** The key is compared with :func:`hmac.compare_digest`, whose time does
  not depend on how much of a guess is right.
* **A non-ASCII key refused.** A header value is bytes (clients send non-ASCII text as UTF-8): those
  bytes are compared with the key's UTF-8 bytes, never re-encoded as text first.
* **Forms read as JSON.** A POST whose content type is not ``application/json`` gets 415 instead of
  a confusing parse error (and a cross-site HTML form, which cannot send that type, cannot search).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from embedtune.serve.schemas import error_json

# Endpoints anyone may call even when a key is set: the page (which asks for the key), health, the API docs.
OPEN_PATHS = ("/", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc", "/favicon.ico")
OPEN_PREFIXES = ("/static/",)


class _BodyTimeout(Exception):
    """The body did not arrive whole within ``body_timeout_seconds``."""


class Guard:
    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int, body_timeout_seconds: float):
        self.app, self.max_body_bytes, self.body_timeout_seconds = app, max_body_bytes, body_timeout_seconds
        self.api_key = api_key.encode("utf-8") if api_key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Decoded as latin-1, each byte of a header is one character: nothing is lost (see _refusal).
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        deadline = asyncio.get_running_loop().time() + self.body_timeout_seconds
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            if refusal[0] == 413:
                await self._discard(receive, deadline)
            await _answer(send, *refusal)
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(receive, deadline)
        except _BodyTimeout:
            message = f"the request body did not arrive within {self.body_timeout_seconds:g} s (body_timeout_seconds)"
            await _answer(send, 408, message)
            return
        if body is None:
            await _answer(send, 413, self._too_large())
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _receive(self, receive: Any, deadline: float) -> dict:
        """The next message of the body, or :class:`_BodyTimeout` once the deadline has passed."""
        try:
            return await asyncio.wait_for(receive(), max(deadline - asyncio.get_running_loop().time(), 0))
        except asyncio.TimeoutError:
            raise _BodyTimeout from None

    async def _read_body(self, receive: Any, deadline: float) -> bytes | None:
        """The whole body, or None as soon as it passes the limit (a chunked body has no Content-Length)."""
        chunks, size = [], 0
        while True:
            message = await self._receive(receive, deadline)
            if message["type"] != "http.request":
                return b"".join(chunks)  # the client left: the app sees an empty body and the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _discard(self, receive: Any, deadline: float) -> None:
        """Read and drop a declared-too-large body (up to 16 times the limit, until the body deadline), so
        that a client still sending it reads the 413 rather than a reset connection; past that, the
        connection is closed."""
        dropped = 0
        while dropped <= 16 * self.max_body_bytes:
            try:
                message = await self._receive(receive, deadline)
            except _BodyTimeout:
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            dropped += len(message.get("body", b""))

    def _refusal(self, scope: dict, headers: dict[str, str]) -> tuple[int, str] | None:
        path = scope.get("path", "")
        if self.api_key is not None and not (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)):
            given = headers.get("x-api-key")
            auth = headers.get("authorization", "")
            if given is None and auth[:7].lower() == "bearer ":
                given = auth[7:].strip(" \t")  # HTTP's spaces only: str.strip() would also eat the byte A0
            if given is None:
                return 401, "an API key is required (header 'X-API-Key: KEY' or 'Authorization: Bearer KEY')"
            # Encoded back as latin-1, the header is the bytes the client sent, compared with the key's UTF-8.
            if not hmac.compare_digest(given.encode("latin-1"), self.api_key):
                return 401, "wrong API key"
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return 400, f"bad Content-Length {length!r}"
            if int(length) > self.max_body_bytes:
                return 413, self._too_large()
        if scope.get("method") == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return 415, f"send the body as application/json (got {kind or 'no content type'})"
        return None

    def _too_large(self) -> str:
        return f"request body over {self.max_body_bytes} bytes (max_body_bytes)"


async def _answer(send: Any, status: int, message: str) -> None:
    body = json.dumps(error_json(status, message), separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status == 408:  # the rest of the body may still come: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
