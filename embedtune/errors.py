"""Errors caused by the user's input: the CLI prints them as one line, without a traceback."""

from __future__ import annotations

from pathlib import Path


class EmbedtuneError(Exception):
    """A problem the user can fix (bad file, wrong option); its message is the whole report."""


class DataError(EmbedtuneError):
    """Bad content in an input file, located by file, line and field where known."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, field: str | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        what = f"field '{field}': {message}" if field else message
        super().__init__(f"{where}: {what}")
        self.path, self.line, self.field = Path(path), line, field


class OutputExistsError(EmbedtuneError):
    """An output that is there already and may not be replaced (the caller did not ask to overwrite)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(f"{path}: already exists")
        self.path = Path(path)


class EmbedtuneWarning(UserWarning):
    """Something the user should know that does not stop the work (a truncated query, k capped)."""
