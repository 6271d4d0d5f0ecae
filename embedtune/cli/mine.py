"""``embedtune mine``: hard negatives for the (query, positive) pairs of a BEIR split."""

from __future__ import annotations

from pathlib import Path

import click

from embedtune.cli.app import EmbedtuneCommand, emit, json_option, note, settings_from_options, show_progress
from embedtune.cli.options import (
    data_option,
    flags,
    given,
    index_option,
    indexes_dir_option,
    model_option,
    options_from,
    overwrite_option,
    split_option,
)
from embedtune.encoding import EncodeSettings
from embedtune.io import refuse_overlap
from embedtune.mining import RETRIEVERS, MiningConfig, MiningReport

retriever_option = click.option(
    "--retriever",
    type=click.Choice(RETRIEVERS),
    default="dense",
    show_default=True,
    help="dense = the mining model's embeddings (exact top-k, in chunks); bm25 = lexical BM25 (bm25s).",
)


def echo_mining(report: MiningReport, output: Path) -> None:
    from embedtune.mining import report_paths

    json_path, png_path = report_paths(output)
    click.echo(report.summary())
    click.echo(f"mined rows written to {output}; report: {json_path}, {png_path}")


def mining_payload(report: MiningReport, output: Path) -> dict:
    """``mine --json``'s fields: where the rows and the report went, and the report itself."""
    from embedtune.mining import report_paths

    json_path, png_path = report_paths(output)
    return {"output": output, "report_json": json_path, "report_png": png_path, "report": report.to_dict()}


@click.command(cls=EmbedtuneCommand)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Mined rows, .jsonl or .jsonl.gz (query, positive, negative_1..n, scores, ids); the report's "
    "JSON and PNG are written beside it.",
)
@data_option()
@split_option("whose pairs get negatives", default="train")
@model_option("ranks the corpus for --retriever dense (normally the model you will fine-tune)")
@index_option(
    "of --data's corpus to mine with instead of --model (its own search: model, calibrated mode and knobs, the "
    "first stage you will run; no corpus re-encoding)"
)
@indexes_dir_option
@retriever_option
@click.option(
    "--scorer",
    type=click.Path(path_type=Path),
    default=None,
    help="Cross-encoder directory (sentence-transformers CrossEncoder) that rescores every candidate and positive: "
    "margins and the scores written for margin-mse become the teacher's (raw logits: prefer --absolute-margin).",
)
@options_from(MiningConfig)
@options_from(EncodeSettings)
@overwrite_option()
@json_option("Print the result as one JSON document (schema embedtune.mine/1: the files written and the report).")
def mine(
    output: Path, data: Path, split: str, model: str, index_name: str | None, retriever: str, as_json: bool, **options
) -> None:
    """Add hard negatives to the (query, positive) pairs of a BEIR split.

    Retrieves the ranks --min-rank..--max-rank of the whole corpus for every query, drops every known
    positive of the query and any document whose text equals a positive's (case and spacing ignored),
    then the candidates that score too close to the row's positive (--relative-margin,
    --absolute-margin) or too high (--max-score), and keeps --num-negatives of the rest. Each row keeps
    the retriever's scores (positive first) for MarginMSE distillation; `embedtune train --data`
    reads the output as is. --data may also be a pairs file (query and positive columns): its pairs
    get negatives from a corpus of the file's positives and negatives.
    """
    from embedtune.mining import mine_to_file

    chosen = given(EncodeSettings, options)
    with settings_from_options():
        config, encoding = MiningConfig(**given(MiningConfig, options)), EncodeSettings(**chosen)
    if index_name is not None and chosen:  # the index's vectors and its own model and settings are used
        unused = flags(EncodeSettings, chosen)
        raise click.UsageError(f"{unused}: not used with --index, which mines with the index's own vectors and model")
    if retriever == "dense":  # BM25 loads no model
        note(f"loading model {model} ..." if index_name is None else f"loading index {index_name} and its model ...")
    refuse_overlap(output, [data], what="--output")  # the library checks it too, naming no flag
    if data.is_file():
        note(f"{data}: a pairs file: every pair is in split '{split}' and gets its negatives from its documents")
    report = mine_to_file(
        data,
        output,
        split=split,
        retriever=retriever,
        model=model,
        index=index_name,
        config=config,
        encoding=encoding,
        show_progress=show_progress(),
        **options,
    )
    if as_json:
        emit("mine", mining_payload(report, output))
    else:
        echo_mining(report, output)
