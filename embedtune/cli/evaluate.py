"""``embedtune eval``: BM25, models and indexes scored side by side on a BEIR-layout split."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from embedtune.cli.app import EmbedtuneCommand, document, json_option, note, settings_from_options, show_progress
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
from embedtune.errors import EmbedtuneError, OutputExistsError
from embedtune.evaluate import EvalSettings
from embedtune.io import atomic_files, check_destination, check_writable, refuse_overlap, writing
from embedtune.retrieval.searcher import MODES, SearchSettings


@click.command("eval", cls=EmbedtuneCommand)
@model_option("is scored with exact search over the whole corpus", repeatable=True)
@index_option("to score with its own search and model (no corpus re-encoding)", repeatable=True, uri=True)
@click.option(
    "--mode",
    "modes",
    multiple=True,
    type=click.Choice(MODES),
    help="Evaluate each --index in this search mode (repeatable: the modes side by side). Default: the "
    "index's own default mode.",
)
@options_from(SearchSettings, exclude=("mode",))
@click.option("--bm25", is_flag=True, help="Also evaluate BM25 (Lucene k1=1.2, b=0.75, English stemming).")
@data_option()
@split_option("to evaluate on", default="test")
@options_from(EvalSettings)
@indexes_dir_option
@options_from(EncodeSettings)
@click.option(
    "--json-out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the results as JSON here (the document --json prints).",
)
@click.option(
    "--markdown-out", type=click.Path(path_type=Path), default=None, help="Also write the table as markdown here."
)
@click.option(
    "--plot", type=click.Path(path_type=Path), default=None, help="Also draw a bar chart of the metrics to this PNG."
)
@click.option(
    "--run-out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also write each system's ranking as a TREC run file (qid Q0 docid rank score system) into this folder, "
    "for trec_eval or ranx.",
)
@overwrite_option("--json-out, --markdown-out, --plot and the run files in --run-out")
@json_option("Print JSON instead of the table (schema embedtune.eval/1: {data, split, results: [one per system]}).")
def eval_command(
    models: tuple[str, ...],
    index_names: tuple[str, ...],
    modes: tuple[str, ...],
    bm25: bool,
    data: Path,
    split: str,
    indexes_dir: Path,
    json_out: Path | None,
    markdown_out: Path | None,
    plot: Path | None,
    run_out: Path | None,
    overwrite: bool,
    as_json: bool,
    **options,
) -> None:
    """Score BM25, models and/or indexes side by side on a BEIR-layout split.

    --data may also be a pairs file (query and positive columns): its queries, with the pairs'
    positives as their relevant documents, are then the evaluated split, over a corpus of the file's
    positives and negatives.

    Metrics are trec_eval's, computed by pytrec_eval (as BEIR and MTEB report them); every query of
    the split counts, and a query a system returns nothing for scores 0 and is reported on stderr.
    """
    from embedtune.evaluate import evaluate, format_report

    encoding, searching = given(EncodeSettings, options), given(SearchSettings, options)
    with settings_from_options():
        settings = EvalSettings(**given(EvalSettings, options), show_progress=show_progress())
        encode = EncodeSettings(**encoding)
        search = SearchSettings(**searching) if searching else None
    if (searching or modes) and not index_names:
        raise click.UsageError("--mode and the fusion/rerank options apply to --index systems, and none was given")
    outputs = {"--json-out": json_out, "--markdown-out": markdown_out, "--plot": plot, "--run-out": run_out}
    _check_before_work(bool(models), encoding, outputs, _inputs(data, models, index_names, indexes_dir), overwrite)
    if models or index_names:
        note(f"loading {', '.join([*models, *(f'index:{i}' for i in index_names)])} ...")
    if data.is_file():
        note(f"{data}: a pairs file: every pair is evaluated, as split '{split}'")
    results = evaluate(
        data,
        split,
        models=models,
        indexes=index_names,
        bm25=bm25,
        indexes_dir=indexes_dir,
        settings=settings,
        encoding=encode,
        search=search,
        modes=modes,
    )
    results_doc = document("eval", {"data": data, "split": split, "results": [r.to_dict() for r in results]})
    payload = json.dumps(results_doc, indent=2, ensure_ascii=False) + "\n"
    report = format_report(results)
    click.echo(payload if as_json else report, nl=False)  # the results first: a failed write loses nothing
    _write_files(results, payload, report, json_out, markdown_out, plot, run_out)


def _inputs(data: Path, models: tuple[str, ...], indexes: tuple[str, ...], indexes_dir: Path) -> list[Path]:
    """The files and folders eval reads: the data, and the models and indexes given by path or name."""
    from embedtune.index import resolve_index_path
    from embedtune.index.qdrant import is_qdrant_uri

    found = [Path(data), *(Path(m) for m in models if Path(m).exists())]
    for index in indexes:
        if not is_qdrant_uri(index):
            with contextlib.suppress(EmbedtuneError):  # a missing index is reported where it is loaded
                found.append(resolve_index_path(index, indexes_dir))
    return found


def _check_before_work(
    has_models: bool, encoding: dict, outputs: dict[str, Path | None], inputs: list[Path], overwrite: bool
) -> None:
    """Refuse, before minutes of encoding, options that would be ignored and outputs that cannot be written,
    exist already (without --overwrite), or would land on or inside an input (even with it)."""
    if encoding and not has_models:  # an index searches with its own model and settings; BM25 encodes nothing
        raise click.UsageError(f"{flags(EncodeSettings, encoding)}: only used for --model systems, and none was given")
    for flag, path in outputs.items():
        if path is None:
            continue
        refuse_overlap(path, inputs, what=flag)
        folder = flag == "--run-out"  # its run files are replaced one by one, so a folder holding any is refused
        if folder and path.is_dir() and any(path.iterdir()) and not overwrite:
            raise OutputExistsError(path)
        if not folder:
            check_destination(path, overwrite)
        check_writable(path, directory=folder)


def _write_files(
    results: list,
    payload: str,
    report: str,
    json_out: Path | None,
    markdown_out: Path | None,
    plot: Path | None,
    run_out: Path | None,
) -> None:
    """The files asked for, after the results were printed: the report files as one output set
    (:func:`embedtune.io.atomic_files`: a full disk or a kill never leaves a new JSON beside an old
    chart), then the run files."""
    from embedtune.evaluate import plot_results, write_run_files

    contents = {
        path: data
        for path, data in (
            (json_out, lambda: payload.encode("utf-8")),
            (markdown_out, lambda: report.encode("utf-8")),
            (plot, lambda: plot_results(results)),
        )
        if path is not None
    }
    if contents:
        with atomic_files(*contents) as temps:
            for tmp, (path, data) in zip(temps, contents.items(), strict=True):
                with writing(path):  # a full disk names the file that did not fit
                    tmp.write_bytes(data())
    if run_out is not None:
        write_run_files(results, run_out)
