"""``embedtune index``: build, update, inspect, calibrate, merge and export indexes.

The options of ``index build`` are the settings of :class:`~embedtune.index.BuildSettings`,
:class:`~embedtune.encoding.EncodeSettings`, :class:`~embedtune.index.shards.ShardSettings` and
:class:`~embedtune.index.lexical.LexicalSettings`; a build scaled out (``--shard`` writes one shard,
``--ray`` encodes all of them on Ray and merges) and ``index merge`` go through
:mod:`embedtune.index.shards`, :mod:`~embedtune.index.merge` and :mod:`~embedtune.index.ray_shards`,
``index export`` through :mod:`~embedtune.index.export`. This module only wires them and prints what
they did.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path

import click

from embedtune.cli.app import EmbedtuneGroup, emit, json_option, note, settings_from_options, show_progress
from embedtune.cli.options import (
    data_option,
    given,
    index_argument,
    index_model_option,
    indexes_dir_option,
    model_option,
    options_from,
    overwrite_option,
    split_option,
)
from embedtune.data import default_data_dir
from embedtune.encoding import EncodeSettings
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.index import BuildSettings, Manifest
from embedtune.index.lexical import LexicalSettings
from embedtune.index.shards import ShardRecord, ShardSettings, shard_dir, shards_dir_of
from embedtune.settings import meta_of

_SAME_NAME_INDEX = "an index of that name (searchable until the new one is complete)"
_ray_option = click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help=meta_of(ShardSettings, "ray").help,
)


@click.group(cls=EmbedtuneGroup)
def index() -> None:
    """Build, update, inspect, calibrate, merge and export FAISS indexes (stored under --indexes-dir).

    \b
    An index is a folder: the FAISS vectors, a SQLite store of ids, texts and metadata looked up by
    FAISS id, and a manifest binding both to the model and corpus. Every write produces a complete
    new version before the old one is dropped, so a crash or kill never leaves a broken index.
    """


@index.command("build")
@model_option("encodes the corpus (and, later, the queries)")
@click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    default=default_data_dir,
    show_default="data/debian",
    help="BEIR folder or corpus.jsonl[.gz] file (_id, title, text).",
)
@click.option(
    "--name",
    default=None,
    help="Index name (default: the model directory's name, a Hub id's last part, 'minilm' for the default model).",
)
@indexes_dir_option
@options_from(EncodeSettings)
@options_from(BuildSettings)
@options_from(ShardSettings)
@_ray_option
@options_from(LexicalSettings)
@click.option(
    "--calibrate",
    "calibrate_split",
    default=None,
    help="Then calibrate on the judged queries of this split of --corpus (a BEIR folder), as 'index calibrate'.",
)
@overwrite_option(_SAME_NAME_INDEX)
@json_option("Print the result as one JSON document (schema embedtune.index.build/1, with the manifest).")
def index_build(
    model: str,
    corpus: Path,
    name: str | None,
    indexes_dir: Path,
    ray_address: str | None,
    calibrate_split: str | None,
    overwrite: bool,
    as_json: bool,
    **options,
) -> None:
    """Encode a corpus into a FAISS index with a document store and a manifest (or one shard of it)."""
    from embedtune.index import build_index
    from embedtune.models import DEFAULT_MODEL, model_name

    if name is None:  # an empty --name is the library's to refuse, not a reason to pick one
        name = "minilm" if model == DEFAULT_MODEL else model_name(model)
    with settings_from_options():
        build, encode = BuildSettings(**given(BuildSettings, options)), EncodeSettings(**given(EncodeSettings, options))
        shards = ShardSettings(**given(ShardSettings, options), ray=ray_address)
        lexical = LexicalSettings(**given(LexicalSettings, options))
    if shards.shards is not None or shards.ray is not None:
        _build_scaled_out(corpus, name, model, shards, build, encode, indexes_dir, overwrite, as_json)
        return
    note(f"loading model {model} ...")
    manifest = build_index(
        corpus,
        name,
        model=model,
        build=build,
        encode=encode,
        indexes_dir=indexes_dir,
        overwrite=overwrite,
        show_progress=show_progress(),
        lexical=lexical,
    )
    if calibrate_split is not None:
        from embedtune.retrieval.calibration import calibrate_index

        note(f"calibrating on the {calibrate_split} queries of {corpus} ...")
        manifest = calibrate_index(
            name, corpus, calibrate_split, indexes_dir=indexes_dir, show_progress=show_progress()
        )
    if as_json:
        emit(
            "index.build",
            {
                "index": name,
                "path": Path(indexes_dir) / name,
                "documents": manifest.count,
                "dimension": manifest.dimension,
                "precision": manifest.precision,
                "backend": manifest.backend,
                "index_type": manifest.index_type,
                "search_defaults": manifest.search_defaults,
                "encode_seconds": manifest.encode_seconds,
                "build_seconds": manifest.build_seconds,
                "manifest": asdict(manifest),
            },
        )
        return
    click.echo(
        f"index '{name}' written to {Path(indexes_dir) / name}: {manifest.count} documents x {manifest.dimension} "
        f"dims, encoded in {manifest.encode_seconds:.0f} s ({manifest.precision}, {manifest.backend}); "
        f"{manifest.describe_search()}"
    )


def _build_scaled_out(
    corpus: Path,
    name: str,
    model: str,
    shards: ShardSettings,
    build: BuildSettings,
    encode: EncodeSettings,
    indexes_dir: Path,
    overwrite: bool,
    as_json: bool,
) -> None:
    """``index build`` with ``--shard`` (writes one shard) or ``--ray`` (encodes every shard on Ray and merges)."""
    if shards.ray is not None:
        from embedtune.index.ray_shards import build_with_ray

        note(f"encoding {corpus} on Ray{' at ' + shards.ray if shards.ray else ''} ...")
        manifest = build_with_ray(
            corpus,
            name,
            address=shards.ray or None,
            shards=shards.shards,
            model=model,
            encode=encode,
            build=build,
            indexes_dir=indexes_dir,
            overwrite=overwrite,
            show_progress=show_progress(),
        )
        _report_index("index.build", manifest, Path(indexes_dir) / name, as_json)
        return
    if shards.shard is None:
        raise click.UsageError("--shards needs --shard K (one shard in this process) or --ray (all of them on Ray)")
    from embedtune.index.shards import encode_shard

    record = encode_shard(
        corpus,
        name,
        shards=shards.shards,
        shard=shards.shard,
        model=model,
        encode=encode,
        indexes_dir=indexes_dir,
        overwrite=overwrite,
        show_progress=show_progress(),
    )
    _report_shard(record, shard_dir(shards_dir_of(indexes_dir, name), record.shards, record.shard), as_json)


def _report_index(schema: str, manifest: Manifest, path: Path, as_json: bool) -> None:
    """What a merge or a Ray build wrote: JSON with the manifest, or one line."""
    if as_json:
        payload = {"index": manifest.name, "path": path, "documents": manifest.count, "dimension": manifest.dimension}
        emit(schema, payload | {"index_type": manifest.index_type, "manifest": asdict(manifest)})
        return
    click.echo(
        f"index '{manifest.name}' written to {path}: {manifest.count} documents x {manifest.dimension} dims "
        f"({manifest.precision}); {manifest.describe_search()}"
    )


def _report_shard(record: ShardRecord, path: Path, as_json: bool) -> None:
    """What ``index build --shard`` wrote."""
    if as_json:
        emit("index.shard", {"path": path} | asdict(record))
        return
    click.echo(
        f"shard {record.shard} of {record.shards} of index '{record.name}' written to {path}: {record.count} "
        f"documents encoded in {record.encode_seconds:.0f} s; once all {record.shards} are written: "
        f"embedtune index merge {record.name}"
    )


@index.command("add")
@index_argument
@click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    required=True,
    help="BEIR corpus.jsonl[.gz] (or folder) of new and changed documents; unchanged ones are skipped.",
)
@index_model_option
@indexes_dir_option
@options_from(EncodeSettings, exclude=("precision", "max_seq_length", "backend"))
@json_option("Print the result as one JSON document (schema embedtune.index.add/1).")
def index_add(index_name: str, corpus: Path, model: str | None, indexes_dir: Path, as_json: bool, **options) -> None:
    """Add new documents and replace changed ones (same id, new text) without a rebuild.

    Documents whose id and text (SHA-256) are already indexed are not re-encoded.
    """
    from embedtune.index import add_documents

    with settings_from_options():
        encode = EncodeSettings(**given(EncodeSettings, options))
    note(f"loading index {index_name} and its model ...")
    result = add_documents(
        index_name,
        corpus,
        indexes_dir=indexes_dir,
        model=model,
        batch_size=encode.batch_size,
        cache=encode.cache,
        show_progress=show_progress(),
    )
    if as_json:
        counts = {"added": result.added, "replaced": result.replaced, "unchanged": result.unchanged}
        emit(
            "index.add",
            {"index": index_name, **counts, "changed": result.changed, "encode_seconds": result.encode_seconds},
        )
        return
    click.echo(
        f"index '{index_name}': {result.added} added, {result.replaced} replaced, {result.unchanged} unchanged"
        + ("" if result.changed else " (nothing written)")
    )


@index.command("remove")
@index_argument
@click.argument("doc_ids", nargs=-1)
@click.option(
    "--ids-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="File with one document id per line (in addition to any DOC_IDS).",
)
@indexes_dir_option
@json_option("Print the result as one JSON document (schema embedtune.index.remove/1, with the ids not found).")
def index_remove(
    index_name: str, doc_ids: tuple[str, ...], ids_file: Path | None, indexes_dir: Path, as_json: bool
) -> None:
    """Remove documents by id (DOC_IDS and/or --ids-file) without a rebuild."""
    from embedtune.data import read_id_file
    from embedtune.index import remove_documents

    ids = list(doc_ids)
    if ids_file is not None:
        ids += read_id_file(ids_file)
    result = remove_documents(index_name, ids, indexes_dir=indexes_dir)
    if result.missing:
        shown = ", ".join(result.missing[:5]) + (" ..." if len(result.missing) > 5 else "")
        warnings.warn(f"{len(result.missing)} id(s) not in the index: {shown}", EmbedtuneWarning, stacklevel=1)
    if as_json:
        payload = {"index": index_name, "removed": result.removed, "missing": list(result.missing)}
        emit("index.remove", payload | {"changed": result.changed})
        return
    click.echo(f"index '{index_name}': {result.removed} removed" + ("" if result.changed else " (nothing written)"))


@index.command("info")
@index_argument
@indexes_dir_option
@json_option("Print the manifest as one JSON document (schema embedtune.index.info/1; the manifest's own keys).")
@click.option("--verify", is_flag=True, help="Also check both data files' SHA-256 against the manifest.")
def index_info(index_name: str, indexes_dir: Path, as_json: bool, verify: bool) -> None:
    """Show what an index holds, which model made it, its type and why, and its search defaults."""
    from embedtune.index import Index

    index = Index.load(index_name, indexes_dir, verify=verify)
    m = index.manifest
    if as_json:
        emit("index.info", asdict(m) | {"path": index.path, "verified": verify})
        return
    rows = m.describe(index.path, verified=verify)
    for key, value in rows:
        click.echo(f"{key:>10}: {value}")


@index.command("calibrate")
@index_argument
@data_option("BEIR folder whose judged queries calibrate the index (its corpus must be the index's).")
@split_option("whose real queries calibrate (never test: its queries must stay unseen)", default="dev")
@click.option("--target-recall", type=float, default=None, help="recall@10 vs exact to reach (default: the build's).")
@click.option(
    "--fusion-depth",
    "depth",
    type=click.IntRange(min=10),
    default=100,
    show_default=True,
    help="Candidates per list fused while choosing the fusion.",
)
@indexes_dir_option
@json_option("Print the calibration as one JSON document (schema embedtune.index.calibrate/1).")
def index_calibrate(
    index_name: str, data: Path, split: str, target_recall: float | None, depth: int, indexes_dir: Path, as_json: bool
) -> None:
    """Calibrate the search knob and the hybrid fusion and default mode on real queries of a split.

    \b
    The knob (nprobe / efSearch) is tuned on half the queries and its recall checked on the other half;
    dense, BM25 and fusions are compared by nDCG@10, and hybrid becomes the default mode only where it
    beats both. Committed as a new generation; 'index info' shows the figures.
    """
    from embedtune.retrieval.calibration import calibrate_index

    note(f"loading index {index_name} and its model ...")
    manifest = calibrate_index(
        index_name,
        data,
        split,
        indexes_dir=indexes_dir,
        target_recall=target_recall,
        depth=depth,
        show_progress=show_progress(),
    )
    if as_json:
        emit(
            "index.calibrate",
            {"index": index_name, "search_defaults": manifest.search_defaults} | manifest.query_calibration,
        )
        return
    for key, value in [("search", manifest.describe_search()), *manifest.describe_hybrid()]:
        click.echo(f"{key:>10}: {value}")


@index.command("list")
@indexes_dir_option
@json_option("Print one JSON document (schema embedtune.index.list/1: {indexes_dir, indexes: [...]}).")
def index_list(indexes_dir: Path, as_json: bool) -> None:
    """List the indexes under --indexes-dir with their type, size and model."""
    from embedtune.index import list_indexes

    found = list_indexes(indexes_dir)
    rows = [
        {"name": name, "error": str(m)}
        if isinstance(m, EmbedtuneError)
        else {
            "name": name,
            "type": m.index_type,
            "documents": m.count,
            "dimension": m.dimension,
            "disk_bytes": m.disk_bytes,
            "model": m.model_path,
            "updated_at": m.updated_at,
        }
        for name, m in found
    ]
    if as_json:
        emit("index.list", {"indexes_dir": indexes_dir, "indexes": rows})
        return
    if not rows:
        click.echo(f"no indexes in {indexes_dir}")
    for r in rows:
        if "error" in r:
            click.echo(f"{r['name']:<20} unreadable: {r['error']}")
        else:
            click.echo(
                f"{r['name']:<20} {r['type']:<9} {r['documents']:>10,} docs x {r['dimension']:<4} "
                f"{r['disk_bytes'] / 1e6:>9,.1f} MB  {r['model']}"
            )


@index.command("merge")
@index_argument
@indexes_dir_option
@click.option(
    "--shards-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of the shards (default: INDEXES_DIR/INDEX.shards, where 'index build --shard' writes them).",
)
@options_from(BuildSettings)
@overwrite_option(_SAME_NAME_INDEX)
@json_option("Print the result as one JSON document (schema embedtune.index.merge/1, with the manifest).")
def index_merge(
    index_name: str, indexes_dir: Path, shards_dir: Path | None, overwrite: bool, as_json: bool, **options
) -> None:
    """Build index INDEX from the shards 'index build --shards N --shard K' wrote.

    \b
    Refuses shards of another model, precision or corpus, of another split, a missing or a duplicated
    shard. IVF types train once on a sample of all shards, then take the shards' vectors a block at a time.
    """
    from embedtune.index.merge import merge_shards

    with settings_from_options():
        build = BuildSettings(**given(BuildSettings, options))
    manifest = merge_shards(
        index_name,
        indexes_dir=indexes_dir,
        shards_dir=shards_dir,
        build=build,
        overwrite=overwrite,
        show_progress=show_progress(),
    )
    _report_index("index.merge", manifest, Path(indexes_dir) / index_name, as_json)


@index.command("export")
@index_argument
@indexes_dir_option
@click.option("--to", "to", type=click.Choice(["qdrant"]), default="qdrant", show_default=True, help="Vector store.")
@click.option("--url", default=None, help="Qdrant server, e.g. http://localhost:6333 (QDRANT_API_KEY from the env).")
@click.option(
    "--path",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for Qdrant's local mode (no server).",
)
@click.option("--collection", default=None, help="Collection name (default: the index name).")
@overwrite_option("a collection of that name")
@json_option("Print the result as one JSON document (schema embedtune.index.export/1).")
def index_export(
    index_name: str,
    indexes_dir: Path,
    to: str,
    url: str | None,
    path: Path | None,
    collection: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Write an index's vectors, ids, texts and model identity to a Qdrant collection.

    \b
    Search it with 'embedtune search --index URI' / 'embedtune eval --index URI' (the URI is printed);
    like the FAISS index, it is refused with any model but the one that built it.
    """
    from embedtune.index.export import export_index

    if (url is None) == (path is None):
        raise click.UsageError("give --url (a Qdrant server) or --path (local mode)")
    note(f"exporting index {index_name} to {to} ...")
    result = export_index(
        index_name, url=url, path=path, collection=collection, indexes_dir=indexes_dir, overwrite=overwrite
    )
    if as_json:
        emit("index.export", {"index": index_name, "to": to} | asdict(result))
        return
    click.echo(f"index '{index_name}' exported: {result.count} documents in {result.uri}")
