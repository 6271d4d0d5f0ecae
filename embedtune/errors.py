"""Errors caused by the user's input or by the machine: the CLI prints them as one line, without a traceback.

An error of the machine (a full disk, a read-only file system, a denied permission) is no bug of
embedtune and no mystery to the user, so it is reported like bad input: :func:`machine_error` is the
one place that turns such an ``OSError`` (or SQLite's own word for it) into an :class:`EmbedtuneError`
naming the path and what to do; the writers of :mod:`embedtune.io` and the CLI both go through it.
"""

from __future__ import annotations

import errno
import os
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


class EarlierRunError(EmbedtuneError):
    """Checkpoints of an earlier run, no longer running, are where a new run would keep its own: the user
    continues it or starts again. The library names the settings (``resume``/``overwrite``), the CLI the
    flags (:attr:`cli_message`); a run still going is refused by its lock before this is asked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.what = f"{path}: checkpoints of an earlier run (not running now) are there"
        super().__init__(f"{self.what}: resume=True continues it, overwrite=True starts again")

    @property
    def cli_message(self) -> str:
        return f"{self.what}: pass --resume to continue it, or --overwrite to start again"


_CANNOT_WRITE = "cannot be written"
# errno -> (what could not be done, what to do about it; {path} is the path in question)
_MACHINE = {
    errno.ENOSPC: (_CANNOT_WRITE, "free space on the device holding {path}, or write elsewhere"),
    errno.EDQUOT: (_CANNOT_WRITE, "free space within your quota on the device holding {path}, or write elsewhere"),
    errno.EROFS: (_CANNOT_WRITE, "write elsewhere, or remount that file system read-write"),
    errno.EACCES: ("cannot be accessed", "give this user access to it, or use another path"),
    errno.EPERM: ("cannot be accessed", "give this user access to it, or use another path"),
}
# SQLite reports the same conditions in its own words, without a path.
_SQLITE = {"database or disk is full": errno.ENOSPC, "attempt to write a readonly database": errno.EROFS}


def machine_error(error: BaseException, path: str | Path | None = None) -> EmbedtuneError | None:
    """``error`` as a one-line :class:`EmbedtuneError` when it is an error of the machine (no space, quota,
    read-only file system, permission; an ``OSError`` or SQLite's ``OperationalError``), else ``None``.

    The path named is ``path``, the output the caller was writing (not a temporary of it, nor the
    silence of a failed ``write``), else the one the error carries (the destination of a copy or
    rename first: that is what was being written).
    """
    import sqlite3

    if isinstance(error, OSError):
        code, reason = error.errno, error.strerror or str(error)
        where = path if path is not None else error.filename2 or error.filename
    elif isinstance(error, sqlite3.OperationalError) and str(error) in _SQLITE:
        code, where = _SQLITE[str(error)], path
        reason = os.strerror(code)  # the system's words, as for an OSError
    else:
        return None
    if code not in _MACHINE:
        return None
    what, advice = _MACHINE[code]
    where = None if where is None else os.fsdecode(where) if isinstance(where, bytes) else str(where)
    subject = f"{where}: {what}" if where is not None else what.capitalize()
    return EmbedtuneError(f"{subject} ({reason}): {advice.format(path=where or 'it')}")


class EmbedtuneWarning(UserWarning):
    """Something the user should know that does not stop the work (a truncated query, k capped)."""


def error_line(error: BaseException, *, last: bool = False) -> str:
    """One non-blank line of an error's message, for a one-line error of our own: the first, or with
    ``last`` the last (where FAISS and Ray put the cause, below their own context); the error's type
    when the message is empty."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if last else lines[0]) if lines else type(error).__name__
