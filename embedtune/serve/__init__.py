"""``embedtune serve``: an HTTP search service over built indexes, with a search page.

:mod:`~embedtune.serve.config` holds the settings, :mod:`~embedtune.serve.registry` the served
indexes (hot-swapped on update), :mod:`~embedtune.serve.batcher` the micro-batching of concurrent
requests, :mod:`~embedtune.serve.schemas` the request bodies and their limits,
:mod:`~embedtune.serve.service` what each endpoint does, :mod:`~embedtune.serve.guard` the API key and
body checks, :mod:`~embedtune.serve.metrics` the Prometheus metrics and :mod:`~embedtune.serve.app`
the FastAPI app (:func:`create_app`). Needs the optional extra ``embedtune[serve]``.
"""

from embedtune.serve.config import ServeSettings


def create_app(*args, **kwargs):
    """See :func:`embedtune.serve.app.create_app`."""
    from embedtune.serve.app import create_app as create

    return create(*args, **kwargs)


__all__ = ["ServeSettings", "create_app"]
