"""The HTTP server under the app: uvicorn, with its own refusals answered in the service's JSON.

A request that uvicorn's HTTP parser cannot read (a malformed ``Content-Length``, no ``Host`` header,
a line that is not HTTP) never reaches the app: uvicorn answers it itself, in plain text, so the one
error format the service promises (``embedtune.error/1``) would have an exception no client expects.
Uvicorn offers no handler for these, but it takes the HTTP protocol class to serve with, and every
one of its HTTP/1.1 protocols answers them through one method, ``send_400_response``.
:class:`JSONErrors` overrides that method on the protocol uvicorn would pick itself (``auto``:
httptools when installed, else h11), so the same bytes are parsed as before and only the answer
changes. :func:`uvicorn_config` is how ``embedtune serve`` and the tests put the app on uvicorn.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from embedtune.serve.schemas import error_json

MAX_DETAIL_CHARS = 200  # the parser's reason may quote the request line: enough to see it, not to echo a flood


class JSONErrors:
    """Mixin for a uvicorn HTTP/1.1 protocol: a request its parser refuses is answered with a JSON 400."""

    transport: Any
    server_state: Any

    def send_400_response(self, msg: str) -> None:
        """Write the answer as bytes, as uvicorn's httptools protocol does: the connection is closed right
        after, so the parser's own state no longer matters, and one answer serves h11 and httptools alike."""
        cycle = getattr(self, "cycle", None)
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            super().send_400_response(msg)  # type: ignore[misc]  # an answer is half sent: nothing clean to add
            return
        # Uvicorn calls this from the ``except`` that caught the parser's error: that error says what is wrong.
        reason = str(sys.exc_info()[1] or "")[:MAX_DETAIL_CHARS]
        message = f"malformed HTTP request: {reason}" if reason else "malformed HTTP request"
        body = json.dumps(error_json(400, message), separators=(",", ":")).encode()
        lines = [b"HTTP/1.1 400 Bad Request"]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        lines += [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        self.transport.close()


class JSONErrorsHTTPProtocol(JSONErrors, AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """Uvicorn's own choice of HTTP/1.1 protocol, answering the requests it cannot parse in JSON."""


def uvicorn_config(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration serving ``app``: its errors all JSON, no access log (the metrics count)."""
    return uvicorn.Config(app, host=host, port=port, http=JSONErrorsHTTPProtocol, log_level=log_level, access_log=False)
