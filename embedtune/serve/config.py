"""The service's settings (address, encoder backend, batching, request limits, reloading), declared once.

:class:`ServeSettings` is what ``embedtune serve`` generates its options from and what
:func:`~embedtune.serve.create_app` takes from a notebook or a test, so the command line and the
Python API refuse the same bad value with the same message. The request limits are part of the
settings rather than constants because they are the service's contract with its clients: a client
learns them from the error that names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedtune.encoding.config import BACKENDS
from embedtune.settings import SettingError, setting, validate


@dataclass
class ServeSettings:
    """How ``embedtune serve`` listens, encodes, batches and limits requests."""

    host: str = setting(
        "127.0.0.1", help="Address to listen on (default loopback only; 0.0.0.0 exposes the service to the network)."
    )
    port: int = setting(8000, help="TCP port to listen on (0 = any free port).", min=0, max=65535)
    backend: str = setting(
        "auto",
        help="What encodes queries: openvino (the optional extra embedtune[openvino]; checked against PyTorch "
        "when converted), torch, or auto = openvino when installed, else torch (said in the log).",
        choices=BACKENDS,
    )
    max_batch: int = setting(
        64, help="Most texts encoded together: concurrent requests are batched up to this many.", min=1, max=4096
    )
    batch_wait_ms: float = setting(
        1.0,
        help="How long a batch waits for more requests after the first arrives (milliseconds); requests that "
        "queue while the model runs join the next batch without waiting.",
        min=0,
        max=1000,
    )
    rerank: Path | None = setting(
        None,
        help="A sentence-transformers CrossEncoder folder, loaded once at start; a search request with "
        "'rerank': true rescores its top 'rerank_depth' hits with it.",
    )
    max_k: int = setting(100, help="Largest k a request may ask for.", min=1, max=10000)
    max_texts: int = setting(64, help="Most queries (or texts to embed) in one request.", min=1, max=4096)
    max_text_chars: int = setting(4096, help="Longest query or text, in characters.", min=1)
    max_body_bytes: int = setting(512 * 1024, help="Largest request body, in bytes.", min=1024)
    body_timeout_seconds: float = setting(
        10.0,
        help="How long a request body may take to arrive whole, in seconds; a client that sends less than its "
        "Content-Length gets 408 then, instead of holding a connection open for ever.",
        above=0,
        max=3600,
    )
    reload_seconds: float = setting(
        1.0,
        help="How often each index's manifest is checked for a new generation (written by 'index add/remove'), "
        "which is then loaded and swapped in without a restart.",
        above=0,
    )
    api_key: str | None = setting(
        None,
        help="Require this key (header 'X-API-Key: KEY' or 'Authorization: Bearer KEY') on every endpoint but "
        "/, /health and the API docs.",
        cli=False,
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.api_key is not None and not self.api_key.strip():
            raise SettingError("api_key", "is empty (leave it unset for no key)")
        if self.max_body_bytes < self.max_text_chars:
            raise SettingError("max_body_bytes", f"must be at least max_text_chars ({self.max_text_chars})")
