"""``embedtune split``: train/dev/test qrels from a BEIR folder or a pairs file."""

from __future__ import annotations

from pathlib import Path

import click

from embedtune.cli.app import EmbedtuneCommand, emit, json_option, settings_from_options
from embedtune.cli.options import given, options_from, overwrite_option
from embedtune.splits import SplitSettings


@click.command("split", cls=EmbedtuneCommand)
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path, exists=True))
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="The new BEIR folder to write.")
@options_from(SplitSettings)
@overwrite_option()
@json_option()
def split(input_path: Path, output: Path, overwrite: bool, as_json: bool, **options) -> None:
    """Write train/dev/test qrels (7:2:1 by default, seeded) from INPUT into a new BEIR folder.

    INPUT is a BEIR folder (its qrels are pooled, or --source-split names one) or a pairs file
    (.jsonl/.csv/.tsv/.parquet with query/anchor and positive columns, negatives optional), whose
    distinct query and document texts get ids hashed from their text. Queries are assigned whole;
    queries with the same text (case, spacing and punctuation ignored) always land on one side, and
    queries sharing a relevant document too, as far as the ratios allow. The report says how many
    queries were kept together and how many documents still serve queries on two sides.
    """
    from embedtune.splits import pairs_to_beir, split_beir
    from embedtune.training_data import is_beir_folder

    with settings_from_options():
        settings = SplitSettings(**given(SplitSettings, options))
    if is_beir_folder(input_path):
        report = split_beir(input_path, output, settings, overwrite=overwrite)
    else:
        if settings.source_split is not None:
            raise click.UsageError("--source-split names a qrels split of a BEIR folder; INPUT is a pairs file")
        report = pairs_to_beir(input_path, output, settings, overwrite=overwrite)
    if as_json:
        emit("split", report.to_dict())
    else:
        click.echo(report.summary())
