"""``embedtune eval``: BM25, models and indexes scored side by side on a BEIR-layout split."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from embedtune.cli.app import (
    EmbedtuneCommand,
    data_option,
    document,
    indexes_dir_option,
    json_option,
    note,
    show_progress,
)
from embedtune.cli.options import flags, given, options_from, overwrite_option
from embedtune.cli.split import dataset_folder
from embedtune.encoding import EncodeSettings
from embedtune.errors import EmbedtuneError, OutputExistsError
from embedtune.io import atomic_files, check_destination, check_writable, refuse_overlap, writing
from embedtune.metrics import DEFAULT_KS, DEFAULT_METRICS
from embedtune.retrieval.hybrid import MODES, SearchSettings


def _parse_ks(_ctx, _param, value: str) -> list[int]:
    try:
        ks = [int(k) for k in value.split(",") if k.strip()]
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'") from e
    if not ks or min(ks) <= 0:
        raise click.BadParameter(f"k values must be positive integers, got '{value}'")
    return ks


@click.command("eval", cls=EmbedtuneCommand)
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    help="Model to evaluate with exact search over the whole corpus ('default' = bundled). Repeatable.",
)
@click.option(
    "--index",
    "indexes",
    multiple=True,
    help="Index to evaluate with its own search and model (no corpus re-encoding); a name, a path or a qdrant:// "
    "URI ('index export'). Repeatable.",
)
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
@data_option
@click.option("--split", default="test", show_default=True, help="Qrels split to evaluate on.")
@click.option(
    "--metrics",
    default=",".join(DEFAULT_METRICS),
    show_default=True,
    help="Comma-separated metrics: recall, precision, mrr, ndcg, map, hit_rate; a bare name is "
    "reported at every -k cut-off, name@k at that one only.",
)
@click.option(
    "-k",
    "ks",
    default=",".join(map(str, DEFAULT_KS)),
    show_default=True,
    callback=_parse_ks,
    help="Cut-offs for the bare metric names of --metrics.",
)
@click.option(
    "--ignore-own-id",
    is_flag=True,
    help="Drop a document whose id is the query's id from its results (BEIR's rule for sets whose "
    "queries are also corpus documents, e.g. ArguAna, data/stsb-retrieval).",
)
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
@click.option("--per-query", is_flag=True, help="Include every query's scores in the JSON output.")
@click.option(
    "--significance",
    is_flag=True,
    help="Test every system against the first, per metric (paired randomisation test over the queries): "
    "p-values in the JSON, * (p < 0.05) and ** (p < 0.01) in the table.",
)
@click.option(
    "--run-out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also write each system's ranking as a TREC run file (qid Q0 docid rank score system) into this folder, "
    "for trec_eval or ranx.",
)
@overwrite_option("Replace --json-out, --markdown-out, --plot and the run files in --run-out if they exist.")
@json_option("Print JSON instead of the table (schema embedtune.eval/1: {data, split, results: [one per system]}).")
def eval_command(
    models: tuple[str, ...],
    indexes: tuple[str, ...],
    modes: tuple[str, ...],
    bm25: bool,
    data: Path,
    split: str,
    metrics: str,
    ks: list[int],
    ignore_own_id: bool,
    indexes_dir: Path,
    json_out: Path | None,
    markdown_out: Path | None,
    plot: Path | None,
    per_query: bool,
    significance: bool,
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
    from embedtune.evaluate import EvalSettings, evaluate, format_report

    encoding = given(EncodeSettings, options)
    searching = given(SearchSettings, options)
    if (searching or modes) and not indexes:
        raise click.UsageError("--mode and the fusion/rerank options apply to --index systems, and none was given")
    outputs = {"--json-out": json_out, "--markdown-out": markdown_out, "--plot": plot, "--run-out": run_out}
    _check_before_work(bool(models), encoding, outputs, _inputs(data, models, indexes, indexes_dir), overwrite)
    settings = EvalSettings(
        metrics=tuple(m for m in metrics.split(",") if m.strip()),
        ks=tuple(ks),
        ignore_own_id=ignore_own_id,
        per_query=per_query,
        significance=significance,
        show_progress=show_progress(),
    )
    if models or indexes:
        note(f"loading {', '.join([*models, *(f'index:{i}' for i in indexes)])} ...")
    with dataset_folder(data, split, uses=f"every pair is evaluated, as split '{split}'") as folder:
        results = evaluate(
            folder,
            split,
            models=models,
            indexes=indexes,
            bm25=bm25,
            indexes_dir=indexes_dir,
            settings=settings,
            encoding=EncodeSettings(**encoding),
            search=SearchSettings(**searching) if searching else None,
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
