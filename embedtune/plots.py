"""The one matplotlib set-up: a headless backend, figures closed after saving, PNGs written atomically.

Plots are optional extras of evaluation, mining and training reports; matplotlib is imported only
when one is drawn, so the commands that draw nothing never pay for it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from embedtune.io import atomic_file


@contextmanager
def figure(*args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """``plt.subplots(*args, **kwargs)`` on the Agg backend (no display needed); the figure is closed after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
    finally:
        plt.close(fig)


def png_bytes(fig: Any, dpi: int = 120) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig: Any, path: Path, dpi: int = 110, *, atomic: bool = True) -> Path:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a PNG); ``atomic=False`` writes ``path``
    itself, for a path that is already a temporary of an output set (:func:`embedtune.io.atomic_files`)."""
    if not atomic:
        fig.savefig(path, format="png", dpi=dpi)
        return path
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
