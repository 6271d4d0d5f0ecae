"""``embedtune encode``: a file of texts (or a BEIR corpus) into a file of vectors, with ids."""

from __future__ import annotations

from pathlib import Path

import click

from embedtune.cli.app import EmbedtuneCommand, emit, json_option, note, settings_from_options, show_progress
from embedtune.cli.options import given, model_option, options_from, overwrite_option
from embedtune.encoding import EncodeSettings
from embedtune.encoding.files import PROMPTS


@click.command(cls=EmbedtuneCommand)
@click.argument("source", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Vectors file: .npy (float32 rows; the ids go to NAME.ids.json beside it) or .parquet (columns id, vector).",
)
@model_option("encodes the texts")
@click.option(
    "--prompt",
    type=click.Choice(PROMPTS),
    default="document",
    show_default=True,
    help="Which of the model's prompts to prepend (as index build does for documents and search for queries); "
    "a model without that prompt encodes the texts as they are.",
)
@options_from(EncodeSettings)
@overwrite_option("--output and its ids file")
@json_option()
def encode(source: Path, output: Path, model: str, prompt: str, overwrite: bool, as_json: bool, **options) -> None:
    """Encode INPUT into normalised vectors: the same vectors an index or search of this model uses.

    \b
    INPUT is one of:
      a plain text file        one text per line (blank lines skipped); ids are the line numbers
      a .jsonl[.gz] file       objects with "text" (and "title", prepended), "_id" or "id" optional
      a BEIR folder            its corpus.jsonl[.gz] (title prepended to text, as BEIR does)

    \b
    Examples:
      embedtune encode titles.txt -o titles.npy                    # + titles.ids.json
      embedtune encode data/debian -o corpus.parquet -m models/mine
      embedtune encode questions.jsonl -o q.npy --prompt query --precision fp32
    """
    from embedtune.encoding import encode_file

    with settings_from_options():
        settings = EncodeSettings(**given(EncodeSettings, options))
    note(f"loading model {model} ...")
    result = encode_file(
        source,
        output,
        model=model,
        prompt=prompt,
        settings=settings,
        overwrite=overwrite,
        show_progress=show_progress(),
    )
    if as_json:
        emit(
            "encode",
            {
                "input": result.source,
                "input_kind": result.input_kind,
                "output": result.output,
                "ids_file": result.ids_path,
                "count": result.count,
                "dimension": result.dimension,
                "model": model,
                "prompt_name": result.prompt_name,
                "precision": result.precision,
                "seconds": result.seconds,
            },
        )
        return
    ids = f", ids in {result.ids_path}" if result.ids_path else ""
    click.echo(
        f"{result.count} texts x {result.dimension} dims ({result.precision}) written to {result.output}{ids} "
        f"in {result.seconds:.0f} s"
    )
