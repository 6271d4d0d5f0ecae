"""``embedtune serve``: an HTTP search service over built indexes, with a search page.

:mod:`~embedtune.serve.config` holds the settings, :mod:`~embedtune.serve.registry` the served
indexes (hot-swapped on update), :mod:`~embedtune.serve.batcher` the micro-batching of concurrent
requests, :mod:`~embedtune.serve.schemas` the request bodies and their limits,
:mod:`~embedtune.serve.service` what each endpoint does, :mod:`~embedtune.serve.guard` the API key and
body checks, :mod:`~embedtune.serve.metrics` the Prometheus metrics, :mod:`~embedtune.serve.app`
the FastAPI app (:func:`create_app`) and :mod:`~embedtune.serve.server` the uvicorn it runs on (whose
own refusals are JSON too). Needs the optional extra ``embedtune[serve]``.
"""

from typing import Any

from embedtune.serve.config import ServeSettings


def __getattr__(name: str) -> Any:
    """``create_app`` on first use: fastapi (an optional extra) is imported only by those who serve."""
    if name == "create_app":
        from embedtune.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'embedtune.serve' has no attribute '{name}'")


__all__ = ["ServeSettings", "create_app"]
