"""``embedtune serve``: the HTTP search service (FastAPI on uvicorn) over one or more built indexes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from embedtune.cli.app import EmbedtuneCommand, note, settings_from_options
from embedtune.cli.options import given, index_model_option, index_option, indexes_dir_option, options_from
from embedtune.serve.config import ServeSettings
from embedtune.settings import meta_of


@click.command(cls=EmbedtuneCommand)
@index_option("to serve (the first given is the default)", required=True, repeatable=True)
@indexes_dir_option
@index_model_option
@options_from(ServeSettings)
@click.option(
    "--api-key",
    envvar="EMBEDTUNE_API_KEY",
    default=None,
    help=meta_of(ServeSettings, "api_key").help + " Default: $EMBEDTUNE_API_KEY.",
)
def serve(index_names: tuple[str, ...], indexes_dir: Path, model: str | None, **options: Any) -> None:
    """Serve search over HTTP: POST/GET /search, POST /embed, /indexes, /health, /metrics, the OpenAPI page
    at /docs and a search page at /."""
    try:
        import uvicorn

        from embedtune.serve.app import create_app
        from embedtune.serve.server import uvicorn_config
    except ImportError as e:
        raise click.ClickException(f"serve needs {e.name}: pip install 'embedtune[serve]'") from e

    with settings_from_options():
        settings = ServeSettings(**given(ServeSettings, options))
    _log_to_stderr()
    note(f"loading {', '.join(index_names)} and the model(s) ...")
    app = create_app(list(index_names), indexes_dir, settings, model=model)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        click.echo(f"warning: listening on {settings.host} without an API key", err=True)
    note(f"serving on http://{settings.host}:{settings.port} (search page at /, API at /docs)")
    # The model thread hands the GIL back and forth with the event loop many times per batch (each torch,
    # tokenizer, FAISS and SQLite call); at the default 5 ms switch interval a busy event loop makes each
    # hand-back wait. This process is the service alone, so it takes a shorter interval.
    sys.setswitchinterval(0.0005)
    config = uvicorn_config(app, host=settings.host, port=settings.port)
    # SIGINT/SIGTERM: stop accepting, finish the requests in flight and what is queued, then end by the
    # signal (uvicorn re-raises it): Ctrl-C exits 130 like every command, SIGTERM as killed by it.
    uvicorn.Server(config).run()


def _log_to_stderr() -> None:
    """The service's own log lines (which backend encodes, index swaps) beside uvicorn's, in its format."""
    logger = logging.getLogger("embedtune.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
