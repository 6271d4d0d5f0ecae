"""Content hashes that tie outputs to their inputs (model fingerprints, corpus and data hashes)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20  # stream files: model weights can be GBs


def update_from_file(digest: Any, path: Path) -> None:
    """Feed a file's bytes into ``digest`` without loading the whole file."""
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_from_file(digest, path)
    return digest.hexdigest()
