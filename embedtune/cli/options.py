"""The command line's options, each declared once: generated from settings dataclasses, or shared here.

A field declared with :func:`embedtune.settings.setting` becomes ``--field-name`` (or its ``flag``),
with the field's help, its choices and its default shown. Values are passed through as typed by click
(int, float, text, path) and checked by the dataclass itself: the CLI, a YAML file and the Python API
refuse a bad value with the same message. Options default to ``None`` so that only the options a user
gave override a config file.

The options that are no setting of the library but are spelled alike on several commands (``--model``,
``--index``, ``--split``, ``--data``, ``--indexes-dir``, ``--overwrite``) are made by the helpers at the
end, with what the command does with the value as a parameter: a flag cannot drift into a second
spelling, type or wording on one command.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from embedtune.data import default_data_dir
from embedtune.index import DEFAULT_INDEXES_DIR
from embedtune.models import DEFAULT_MODEL
from embedtune.settings import field_type, meta


def _parse_list(kind: type) -> Callable:
    def parse(_ctx, param, value: str | None):
        if value is None:
            return None
        try:
            return tuple(kind(v) for v in value.split(",") if v.strip())
        except ValueError as e:
            raise click.BadParameter(f"expected comma-separated {kind.__name__} values, got '{value}'") from e

    return parse


class _OptionalFloat(click.ParamType):
    """A float, or 'none' to switch a rule off (a setting whose default is a number but may be None)."""

    name = "FLOAT|none"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        if str(value).strip().lower() in ("none", "off"):
            return _NONE
        try:
            return float(value)
        except ValueError:
            self.fail(f"expected a number or 'none', got '{value}'", param, ctx)


# An explicit 'none' on the command line, told apart from an option not given (None).
_NONE = object()


def _shown_default(field: dataclasses.Field) -> str:
    value = field.default
    if value is dataclasses.MISSING or value is None or value is False:
        return ""
    if value is True:
        return "on"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def flags(cls: type, names: Iterable[str]) -> str:
    """The options that set settings ``names`` of ``cls``, as a user reads them in a message."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return ", ".join(_declarations(fields[name])[0].split("/")[0] for name in names)


def _declarations(field: dataclasses.Field) -> tuple[str, ...]:
    flag = meta(field).flag
    if flag is None:
        return (f"--{field.name.replace('_', '-')}",)
    return (flag,) if isinstance(flag, str) else tuple(flag)


def option_for(cls: type, field: dataclasses.Field) -> Callable:
    """The click option of one setting field (see the module docstring)."""
    m = meta(field)
    kind, optional = field_type(cls, field.name)
    decls = _declarations(field)
    shown = _shown_default(field)
    # Defaults are shown in the help by hand: the options' own defaults are None (not given).
    kwargs: dict[str, Any] = {"default": None, "help": m.help + (f"  [default: {shown}]" if shown else "")}
    if m.choices is not None:
        kwargs["metavar"] = "[" + "|".join(map(str, m.choices)) + "]"
    if kind is bool:
        negative_only = len(decls) == 1 and decls[0].startswith("--no-")
        if negative_only:
            kwargs |= {"flag_value": False, "help": m.help}
        elif field.default is True and "/" not in decls[0]:
            decls = (f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:])
        else:
            kwargs |= {"flag_value": True, "help": m.help}
        return click.option(*decls, field.name, **kwargs)
    origin = typing.get_origin(kind)
    if origin is tuple:
        items = typing.get_args(kind)
        if len(items) == 2 and items[1] is not Ellipsis:
            kwargs |= {"type": items, "metavar": " ".join(t.__name__.upper() for t in items)}
        else:
            kwargs |= {"callback": _parse_list(items[0]), "metavar": "A,B,..."}
    elif kind is Path:
        kwargs["type"] = click.Path(path_type=Path)
    elif kind is float and optional and field.default is not None:
        kwargs["type"] = _OptionalFloat()
    elif kind in (int, float):
        kwargs["type"] = kind
    return click.option(*decls, field.name, **kwargs)


def options_from(cls: type, *, exclude: Iterable[str] = ()) -> Callable:
    """A decorator adding one option per CLI setting of ``cls``, in field order."""
    skip = set(exclude)
    chosen = [f for f in dataclasses.fields(cls) if (m := meta(f)) is not None and m.cli and f.name not in skip]

    def decorate(command: Callable) -> Callable:
        for field in reversed(chosen):
            command = option_for(cls, field)(command)
        return command

    return decorate


def given(cls: type, options: dict[str, Any], *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Pop ``cls``'s fields (but ``exclude``) out of a command's keyword arguments; keep those the user
    gave (not None), with an explicit 'none' as None."""
    names = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    picked = {name: options.pop(name) for name in list(options) if name in names}
    return {name: None if value is _NONE else value for name, value in picked.items() if value is not None}


_MODEL_FORMS = (
    f"'{DEFAULT_MODEL}' (the bundled all-MiniLM-L6-v2), a sentence-transformers folder, or a Hub id in the local "
    "Hugging Face cache"
)


def model_option(role: str, *, default: str | None = DEFAULT_MODEL, repeatable: bool = False) -> Callable:
    """``--model/-m`` (the command's ``model``; ``models`` when ``repeatable``), the model that ``role``
    ("encodes the texts"). Every command names a model the same way (:func:`embedtune.models.resolve_model_path`),
    so the help says so here once. ``default=None``: no model unless given (an index's own is used)."""
    help = f"Model that {role}: {_MODEL_FORMS}."
    if repeatable:
        return click.option("--model", "-m", "models", multiple=True, help=help + " Repeatable.")
    return click.option("--model", "-m", "model", default=default, show_default=default is not None, help=help)


def index_option(role: str, *, required: bool = False, repeatable: bool = False, uri: bool = False) -> Callable:
    """``--index`` (the command's ``index_name``; ``index_names`` when ``repeatable``), the built index that
    ``role`` ("to search"); ``uri``: a ``qdrant://`` collection is taken too. Subcommands of ``index``, which
    always act on one index, take it as an argument instead (:data:`index_argument`)."""
    forms = "a name under --indexes-dir or a folder" + (", or the qdrant:// URI 'index export' printed" if uri else "")
    help = f"Index {role}: {forms}." + (" Repeatable." if repeatable else "")
    name = "index_names" if repeatable else "index_name"
    return click.option("--index", name, multiple=repeatable, required=required, default=None, help=help)


def split_option(role: str, *, default: str) -> Callable:
    """``--split``: the qrels split of ``--data`` that ``role`` ("to evaluate on"). Each command has its own
    default (``train`` to mine, ``dev`` to calibrate, ``test`` to evaluate), shown in the help."""
    return click.option("--split", default=default, show_default=True, help=f"Qrels split of --data {role}.")


_DATA_HELP = (
    "BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/{train,dev,test}.tsv; .gz allowed), or a pairs file "
    "(query + positive columns), converted on the fly."
)


def data_option(help: str = _DATA_HELP) -> Callable:
    """``--data``: the dataset a command reads, ``data/debian`` unless given."""
    return click.option(
        "--data", type=click.Path(path_type=Path), default=default_data_dir, show_default="data/debian", help=help
    )


def overwrite_option(what: str = "--output") -> Callable:
    """``--overwrite`` (the command's ``overwrite`` argument) for the outputs ``what`` names: without it an
    existing output is refused, never silently replaced. Every command that writes files declares it here."""
    return click.option("--overwrite", is_flag=True, help=f"Replace {what} if already there, instead of refusing.")


indexes_dir_option = click.option(
    "--indexes-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_INDEXES_DIR,
    show_default=True,
    help="Folder that holds the indexes.",
)
index_argument = click.argument("index_name", metavar="INDEX")
# --model where a built index is used: the index's own model is loaded from its manifest unless given.
index_model_option = model_option(
    "built the index, loaded from here instead of from the path its manifest records (refused unless byte-identical)",
    default=None,
)
