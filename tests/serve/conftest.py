"""Fixtures of the service tests: a tiny index, and the service running on a free loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from http_client import running

from embedtune.encoding import EncodeSettings
from embedtune.index import build_index


@pytest.fixture
def indexes_dir(tmp_path: Path, tiny_st: Path, beir_dir: Path) -> Path:
    """``tiny``: the handmade corpus, indexed with the tiny model in fp32."""
    folder = tmp_path / "indexes"
    build_index(
        beir_dir,
        "tiny",
        model=tiny_st,
        indexes_dir=folder,
        encode=EncodeSettings(precision="fp32"),
        show_progress=False,
    )
    return folder


@pytest.fixture
def serve(indexes_dir: Path) -> Iterator[Callable[..., str]]:
    """``serve(**settings)``: the app over ``tiny`` running in this process; returns its base URL."""
    from embedtune.serve import ServeSettings, create_app

    stack = []

    def start(*names: str, **settings: object) -> str:
        settings = {"backend": "torch", "reload_seconds": 0.1, **settings}
        app = create_app(list(names) or ["tiny"], indexes_dir, ServeSettings(**settings))
        context = running(app)
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)
