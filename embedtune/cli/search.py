"""``embedtune search``: the top-k documents of an index for one query or a file of queries."""

from __future__ import annotations

import textwrap
from pathlib import Path

import click

from embedtune.cli.app import EmbedtuneCommand, emit, json_option, note, settings_from_options, show_progress
from embedtune.cli.options import given, index_model_option, index_option, indexes_dir_option, options_from
from embedtune.encoding import BACKENDS, PRECISIONS, EncodeSettings
from embedtune.retrieval.searcher import SearchSettings
from embedtune.settings import meta_of
from embedtune.text import terminal_safe


@click.command(cls=EmbedtuneCommand)
@click.argument("query", nargs=-1)
@index_option("to search", required=True, uri=True)
@indexes_dir_option
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Results per query.")
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Search a batch: a .jsonl file of {'_id' or 'id', 'text'} objects, or plain text with one query per line.",
)
@index_model_option
@json_option(
    "Print JSON for programs (schema embedtune.search/1): one object for QUERY; for a --queries batch, "
    "JSON Lines: one object per query per line, each with its schema field."
)
@click.option(
    "--show-text",
    "--width",
    "width",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Characters of document text shown per hit (0 = ids and scores only; with --json, 0 drops the text).",
)
@click.option(
    "--precision",
    metavar="[" + "|".join(PRECISIONS) + "]",
    default=None,
    help="Precision of the query encoding (default: the index's own, as 'index info' shows). "
    + meta_of(EncodeSettings, "precision").help,
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="What encodes the queries: auto = openvino for a single QUERY where it is installed (the optional extra "
    "embedtune[openvino]; least overhead for one text; falls back to torch with a warning if its conversion fails "
    "the check against PyTorch), torch for a --queries batch.",
)
@options_from(SearchSettings)
def search(
    query: tuple[str, ...],
    index_name: str,
    indexes_dir: Path,
    k: int,
    queries_file: Path | None,
    model: str | None,
    as_json: bool,
    width: int,
    precision: str | None,
    backend: str,
    **options,
) -> None:
    """Print the top-k documents of an index for QUERY (all arguments joined by spaces) or a --queries file."""
    import time

    from embedtune.data import read_query_file
    from embedtune.retrieval import Searcher

    with settings_from_options():
        if precision is not None:
            EncodeSettings(precision=precision)  # refused as every command refuses it
        settings = SearchSettings(**given(SearchSettings, options))
        settings.check_k(k)
    if bool(query) == bool(queries_file):
        raise click.UsageError("give either QUERY or --queries FILE")
    queries = [(None, " ".join(query))] if query else read_query_file(queries_file)
    note(f"loading index {index_name} and its model ...")
    if backend == "auto" and queries_file is not None:
        backend = "torch"  # batches: torch's own bf16 path is the faster one (benchmarks/results/encoding_speed.md)
    searcher = Searcher.open(
        index_name, indexes_dir=indexes_dir, model=model, precision=precision, backend=backend, settings=settings
    )
    progress = show_progress() and queries_file is not None  # one query is over before a bar could help
    texts = [text for _, text in queries]
    started = time.perf_counter()
    plan = searcher.plan()
    results = searcher.search(texts, k, settings=plan, show_progress=progress)
    ms = round(1000 * (time.perf_counter() - started) / len(texts), 2)
    note(f"{plan.mode} search{' + rerank' if plan.rerank else ''}: {ms} ms per query")
    for (query_id, text), hits in zip(queries, results, strict=True):
        if as_json:
            payload = {"query": text, "index": searcher.index.name} | ({"id": query_id} if query_id else {})
            payload |= {"mode": plan.mode, "reranked": plan.rerank is not None, "ms_per_query": ms}
            payload["encoder"] = {"backend": searcher.encoder.backend, "precision": searcher.encoder.precision}
            payload["hits"] = [h.to_json(text=bool(width)) for h in hits]
            emit("search", payload, indent=None if queries_file else 2)
            continue
        # Texts come from files and users: shown with control characters escaped, never run by the terminal.
        label = terminal_safe(f"{query_id}: {text}" if query_id else text)
        click.echo(f"top {len(hits)} of {len(searcher.index)} documents in '{searcher.index.name}' for: {label}")
        for h in hits:
            click.echo(f"{h.rank:>3}. {h.score:.4f}  {terminal_safe(h.doc_id)}")
            if width:
                shown = textwrap.shorten(" ".join(h.text.split()), width=max(width, 5), placeholder=" ...")
                click.echo(f"     {terminal_safe(shown)}")
