"""``embedtune mine``: hard negatives for the (query, positive) pairs of a BEIR split."""

from __future__ import annotations

from pathlib import Path

import click

from embedtune.cli.app import EmbedtuneCommand, data_option, emit, indexes_dir_option, json_option, note, show_progress
from embedtune.cli.options import flags, given, options_from, overwrite_option
from embedtune.cli.split import dataset_folder
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
@data_option
@click.option("--split", default="train", show_default=True, help="Qrels split whose pairs get negatives.")
@click.option(
    "--model",
    "-m",
    default="default",
    show_default=True,
    help="Embedder for --retriever dense (normally the model you will fine-tune).",
)
@click.option(
    "--index",
    "index_name",
    default=None,
    help="Mine with a built index of this corpus instead (its vectors and its model; no corpus re-encoding).",
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

    config = MiningConfig(**given(MiningConfig, options))
    chosen = given(EncodeSettings, options)
    if index_name is not None and chosen:  # the index's vectors and its own model and settings are used
        unused = flags(EncodeSettings, chosen)
        raise click.UsageError(f"{unused}: not used with --index, which mines with the index's own vectors and model")
    encoding = EncodeSettings(**chosen)
    if retriever == "dense":  # BM25 loads no model
        note(f"loading model {model} ..." if index_name is None else f"loading index {index_name} and its model ...")
    refuse_overlap(output, [data], what="--output")  # a pairs file is read through a temporary folder: check it here
    uses = f"every pair is in split '{split}' and gets its negatives from these documents"
    with dataset_folder(data, split, uses=uses) as folder:
        report = mine_to_file(
            folder,
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
