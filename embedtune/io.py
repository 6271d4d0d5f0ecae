"""Files on disk: write-then-rename (a crash never leaves a half-written model, index or file),
fsync, content hashes that tie outputs to their inputs, and SQLite's variable limit.

Every module that writes an output goes through here, so atomicity and durability are decided once.
Outputs get the modes of any file the user creates (the umask), not the private 0600/0700 that
``mkstemp``/``mkdtemp`` give temporaries. A temporary's name carries its host and process id, so
the next write of the same output can remove what a killed run left behind without ever touching
the temporary of a run still alive (:func:`remove_stale_temporaries`). :func:`check_writable` lets a
command fail before its work, not after it, when an output cannot be written, and
:func:`refuse_overlap` when an output would replace or land inside one of the command's own inputs.

A full disk, a read-only file system or a denied permission met while writing is reported as an
:class:`~embedtune.errors.EmbedtuneError` naming the file (:func:`writing`, through
:func:`~embedtune.errors.machine_error`); the temporaries are removed and the previous output stays.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from embedtune.errors import EmbedtuneError, OutputExistsError, machine_error

T = TypeVar("T")
_READ_CHUNK = 1 << 20  # stream files: model weights can be GBs
SQLITE_MAX_VARIABLES = 900  # keys per "IN (...)" query, under SQLite's oldest limit of 999 variables


def check_destination(target: Path, overwrite: bool, *, made_by: str | None = None) -> None:
    """Refuse to replace an existing output unless asked to; call before the expensive work.

    ``made_by`` names a file that a folder this command wrote always holds (a trained model's record):
    a non-empty folder without it was not written by the command, and ``overwrite`` never deletes
    what the command did not write (``-o ~/projects --overwrite`` by mistake would remove them all).
    """
    target = Path(target)
    if not target.exists():
        return
    if not overwrite:
        raise OutputExistsError(target)
    if made_by is not None and target.is_dir() and not (target / made_by).exists() and any(target.iterdir()):
        raise EmbedtuneError(
            f"{target}: holds files this command did not write (no {made_by}), which overwrite would delete: "
            "choose another output, or remove the folder yourself"
        )


def _same_file(a: Path, b: Path) -> bool:
    """Whether two existing paths are one file (a hard link, a bind mount); False where either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overlap(output: str | Path, inputs: Iterable[str | Path | None], *, what: str = "output") -> None:
    """Refuse ``output`` when it is, contains or lies inside one of ``inputs`` (``None`` entries skipped).

    Paths are compared after resolving symlinks (and as files, so a hard link to an input is that
    input), whether or not the output exists yet or replacing it was asked for: an output written over
    its own input destroys the data it was made from, and one written inside an input folder changes
    that input for every later reader. Call it before any work; ``what`` names the output in the message.
    """
    out = Path(output).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if out == source or _same_file(out, source):
            relation = "is"
        elif source in out.parents:
            relation = "lies inside"
        elif out in source.parents:
            relation = "contains"
        else:
            continue
        raise EmbedtuneError(
            f"{output}: the {what} {relation} the input {given}; writing it there would change that input: "
            "choose a path apart from every input"
        )


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Report an error of the machine raised inside (full disk, read-only file system, permission) as a
    one-line :class:`EmbedtuneError` naming ``path``, the output being written: the error itself names
    a temporary, or nothing at all (a failed ``write``, SQLite's "database or disk is full"). Any other
    error passes through unchanged."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as e:
        error = machine_error(e, path)
        if error is None:
            raise
        raise error from e


def _read_only_file_system(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_writable(path: Path, *, directory: bool = False) -> None:
    """Fail now, with one line, if ``path`` (a file, or with ``directory`` a folder) could not be written.

    The nearest existing ancestor must be a writable folder; an existing ``path`` must be of the
    right kind. Nothing is created, so a refused command leaves no trace.
    """
    path = Path(path)
    if path.exists():
        if path.is_dir() != directory:
            raise EmbedtuneError(f"{path}: is {'not ' if directory else ''}a folder; cannot write it")
        parent = path if directory else path.parent
    else:
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.is_dir():
        raise EmbedtuneError(f"{path}: cannot be written ({parent} is a file, not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only_file_system(parent) else "is not writable"
        raise EmbedtuneError(f"{path}: cannot be written ({parent} {why})")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give every file under ``folder`` the mode a file the user creates gets (``0666 & ~umask``).

    Libraries write some files with modes of their own (safetensors: 0600), so a model folder meant to
    be shared or served by another user would be unreadable to them, whatever the user's umask says.
    """
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(name: str, kind: str = "tmp") -> str:
    """``.NAME.tmp-HOST-PID-``: who owns a temporary, for :func:`remove_stale_temporaries`."""
    return f".{name}.{kind}-{_host_tag()}-{os.getpid()}-"


_OWNER = re.compile(r"\.(?:tmp|old)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^/]*$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete the temporaries of ``target`` (``.NAME.tmp-*``, ``.NAME.old-*``) whose writer is dead.

    Only temporaries named by this module on this host are considered, and only those whose process
    no longer exists, so a concurrent run's temporary is never deleted. Returns what was removed.
    An ``.old-`` folder holding ``target`` while ``target`` itself is missing is a replacement killed
    between its two renames (where the kernel cannot exchange two paths, :func:`atomic_directory`):
    the old version is put back, not deleted.
    """
    target = Path(target)
    removed: list[Path] = []
    finish_commits(target)  # a set's temporaries are its new version until its commit is finished
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    host = _host_tag()
    for entry in entries:
        if not entry.name.startswith(f".{target.name}."):
            continue
        owner = _OWNER.match(entry.name[len(target.name) + 1 :])
        if owner is None or owner["host"] != host or _alive(int(owner["pid"])):
            continue
        kept = entry / target.name
        if ".old-" in entry.name and kept.exists() and not os.path.lexists(target):
            os.replace(kept, target)  # the only copy of the previous output: restored
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


_COMMIT = re.compile(r"^\..+\.commit-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^/]*\.json$")
_COMMIT_TEMP = re.compile(r"^\.\..+\.commit-[^/]*\.json\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^/]*$")


def finish_commits(path: Path) -> list[Path]:
    """Finish the commits of output sets (:func:`atomic_files`) in ``path``'s folder whose writer died.

    A journal is written only once every file of the set is complete, so finishing its renames is
    always right: the set becomes all new. Called before any write beside ``path`` and by readers of
    such sets (a mined file), so no one works on half a commit. Returns the journals finished.
    """
    folder = Path(path).parent
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    host, done = _host_tag(), []
    for entry in entries:  # a journal killed while being written: never applied, so only debris
        owner = _COMMIT_TEMP.match(entry.name)
        if owner is not None and owner["host"] == host and not _alive(int(owner["pid"])):
            entry.unlink(missing_ok=True)
    journals = [e for e in entries if _COMMIT.match(e.name) and e.exists()]
    for journal in journals:
        owner = _COMMIT.match(journal.name)
        if owner is None or owner["host"] != host or _alive(int(owner["pid"])):
            continue
        try:
            renames = json.loads(journal.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not one of ours after all: left alone
        _apply(renames)
        journal.unlink(missing_ok=True)
        done.append(journal)
    return done


def _apply(renames: list[list[str | None]]) -> None:
    """Each ``[temporary, final]`` (absolute paths): the temporary renamed onto the final path (None: the
    final removed); then each folder's entries flushed."""
    for tmp, final in renames:
        if tmp is None:
            Path(final).unlink(missing_ok=True)
        elif Path(tmp).exists():
            os.replace(tmp, final)
    for folder in {str(Path(final).parent) for _, final in renames}:
        fsync_path(Path(folder))


@contextmanager
def atomic_files(*paths: Path | None, remove: Sequence[Path] = ()) -> Iterator[list[Path]]:
    """Yield a temporary for each of ``paths`` (``None`` skipped); on success commit them as one unit.

    An output made of several files (vectors and their ids, mined rows with their companion and
    report) must never be seen half old, half new. The body writes every temporary; then a journal
    of the renames is written, the renames done and the journal removed. A kill before the journal
    leaves the old set; a kill after it leaves a journal that the next write beside these files, or
    a reader of them, finishes (:func:`finish_commits`): the new set. The journal lies beside the first
    file, so a set spread over folders is finished by a write beside that one. ``remove`` are files of
    an earlier set that this one does not have (a companion no longer written): removed in the commit.
    """
    finals = [Path(p).absolute() for p in paths if p is not None]
    folder = finals[0].parent
    temps: list[Path] = []
    journal: Path | None = None
    with writing(finals[0]):
        try:
            for final in finals:
                temps.append(_temporary(final))
            yield temps
            for tmp in temps:
                fsync_path(tmp)
            renames = [[str(t), str(f)] for t, f in zip(temps, finals, strict=True)]
            renames += [[None, str(Path(r).absolute())] for r in remove]
            journal = folder / f"{_temp_prefix(finals[0].name, 'commit')}{os.urandom(4).hex()}.json"
            write_bytes_atomic(journal, json.dumps(renames).encode("utf-8"))
            _apply(renames)
            journal.unlink()
        finally:
            if journal is None or not journal.exists():  # no commit begun, or done: nothing to keep
                for tmp in temps:
                    tmp.unlink(missing_ok=True)


def make_temp_dir(target: Path, kind: str = "tmp") -> Path:
    """A new empty folder beside ``target`` (same file system, so it can be renamed onto it), with the
    mode a folder the user creates gets; stale temporaries of ``target`` are removed first."""
    target = Path(target)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target.name, kind), dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextmanager
def exclusive_lock(lock_path: Path, busy: str) -> Iterator[None]:
    """Hold ``lock_path`` exclusively or fail at once with ``busy``; the lock file is removed on release.

    A waiter that opened the file before its removal notices (its file is no longer the one at the
    path) and reports the conflict rather than holding a lock nobody else sees. A kill leaves the
    file behind, unlocked: the next writer takes it and removes it.
    """
    import fcntl

    with writing(lock_path):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            same = os.path.exists(lock_path) and os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except BlockingIOError:
            same = False
        if not same:
            raise EmbedtuneError(busy)
        try:
            yield
        finally:
            os.unlink(lock_path)
    finally:
        os.close(fd)


def name_lock(target: Path):
    """Hold ``.NAME.lock`` beside ``target``: one writer of a new output at a time, refused at once."""
    target = Path(target)
    return exclusive_lock(
        target.with_name(f".{target.name}.lock"),
        f"{target}: another embedtune process is writing it; try again when it is done",
    )


@contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; on success move it to ``target``.

    The temporary directory lives in the same parent so the final ``rename`` is atomic. If the body
    raises (or the process is killed), ``target`` is untouched: an old version stays fully usable.
    An existing directory is replaced by exchanging the two names in one step where the kernel can
    (Linux ``renameat2(RENAME_EXCHANGE)``), so ``target`` is always the old or the new version; else
    by two renames, the old version kept under an ``.old-`` name in between, which the next write of
    ``target`` puts back if a kill came between them (:func:`remove_stale_temporaries`).
    """
    target = Path(target)
    check_destination(target, overwrite)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(target)
        try:
            yield tmp
            if not target.exists():
                os.replace(tmp, target)
            elif exchange_paths(tmp, target):  # tmp now holds the old version
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                old = make_temp_dir(target, "old")
                os.replace(target, old / target.name)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2`` with ``RENAME_EXCHANGE``).

    False, with nothing changed, where the C library, the kernel or the file system cannot; any
    other failure is raised as the ``OSError`` it is.
    """
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def _temporary(path: Path) -> Path:
    """A new empty file beside ``path`` (same file system, so it can be renamed onto it), with the mode a
    file the user creates gets; stale temporaries of ``path`` are removed first. Call inside
    :func:`writing` for ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), dir=path.parent)
    except OSError as e:
        if machine_error(e) is not None:
            raise  # named and advised by writing()
        raise EmbedtuneError(f"{path}: cannot be written ({e.strerror or e})") from e
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success rename it over ``path``.

    Readers never see half a file, and a failed write leaves any previous ``path`` untouched.
    """
    path = Path(path)
    with writing(path):
        tmp = _temporary(path)
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a small file via :func:`atomic_file`, synced to disk before the name points at it."""
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries (a rename in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def update_from_file(digest: Any, path: Path) -> None:
    """Feed a file's bytes into ``digest`` without loading the whole file."""
    with Path(path).open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_from_file(digest, path)
    return digest.hexdigest()


def file_xxh3(path: Path) -> str:
    """A fast (non-cryptographic) 128-bit digest of a whole file, for checking a file on every load."""
    import xxhash

    digest = xxhash.xxh3_128()
    update_from_file(digest, path)
    return digest.hexdigest()


SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES = 1024, 4096


def sampled_xxh3(path: Path) -> str:
    """A digest of ``SAMPLE_BLOCKS`` evenly spaced blocks of a file (and its size): reads at most 4 MiB.

    For files too large to hash on every load; it catches damage in or near a sampled block (a
    truncation, a zeroed page range, a half-copied file), not every flipped byte.
    """
    import xxhash

    path = Path(path)
    size = path.stat().st_size
    digest = xxhash.xxh3_128(str(size).encode())
    with path.open("rb") as f:
        last = max(size - SAMPLE_BLOCK_BYTES, 0)
        for i in range(SAMPLE_BLOCKS):
            f.seek(last * i // (SAMPLE_BLOCKS - 1))
            digest.update(f.read(SAMPLE_BLOCK_BYTES))
    return digest.hexdigest()


def sqlite_chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in slices small enough for one SQLite ``IN (...)`` query."""
    for start in range(0, len(items), SQLITE_MAX_VARIABLES):
        yield items[start : start + SQLITE_MAX_VARIABLES]
