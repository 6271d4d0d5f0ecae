"""``embedtune index build --shards/--shard/--ray``, ``index merge`` and ``index export``: scaling an index out.

The build options are declared in :class:`~embedtune.index.shards.ShardSettings`; this module only
turns them into calls of :mod:`embedtune.index.shards`, :mod:`~embedtune.index.merge`,
:mod:`~embedtune.index.ray_shards` and :mod:`~embedtune.index.qdrant`, and prints what they did.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from embedtune.cli.app import EmbedtuneCommand, emit, index_argument, indexes_dir_option, json_option, note
from embedtune.cli.app import show_progress as progress_shown
from embedtune.cli.options import given, options_from, overwrite_option
from embedtune.encoding import EncodeSettings
from embedtune.index import BuildSettings, Manifest
from embedtune.index.shards import ShardRecord, ShardSettings, shard_dir, shards_dir_of
from embedtune.settings import meta_of

REPLACE_INDEX = "Replace an existing index of that name (kept usable until done)."
ray_option = click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help=meta_of(ShardSettings, "ray").help,
)


def build_scaled_out(
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
            show_progress=progress_shown(),
        )
        report_index("index.build", manifest, Path(indexes_dir) / name, as_json)
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
        show_progress=progress_shown(),
    )
    report_shard(record, shard_dir(shards_dir_of(indexes_dir, name), record.shards, record.shard), as_json)


@click.command("merge", cls=EmbedtuneCommand)
@index_argument
@indexes_dir_option
@click.option(
    "--shards-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of the shards (default: INDEXES_DIR/INDEX.shards, where 'index build --shard' writes them).",
)
@options_from(BuildSettings)
@overwrite_option(REPLACE_INDEX)
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

    manifest = merge_shards(
        index_name,
        indexes_dir=indexes_dir,
        shards_dir=shards_dir,
        build=BuildSettings(**given(BuildSettings, options)),
        overwrite=overwrite,
        show_progress=progress_shown(),
    )
    report_index("index.merge", manifest, Path(indexes_dir) / index_name, as_json)


def report_index(schema: str, manifest: Manifest, path: Path, as_json: bool) -> None:
    """What a merge or a Ray build wrote: JSON with the manifest, or one line."""
    if as_json:
        payload = {"index": manifest.name, "path": path, "documents": manifest.count, "dimension": manifest.dimension}
        emit(schema, payload | {"index_type": manifest.index_type, "manifest": asdict(manifest)})
        return
    click.echo(
        f"index '{manifest.name}' written to {path}: {manifest.count} documents x {manifest.dimension} dims "
        f"({manifest.precision}); {manifest.describe_search()}"
    )


def report_shard(record: ShardRecord, path: Path, as_json: bool) -> None:
    """What ``index build --shard`` wrote."""
    if as_json:
        emit("index.shard", {"path": path} | asdict(record))
        return
    click.echo(
        f"shard {record.shard} of {record.shards} of index '{record.name}' written to {path}: {record.count} "
        f"documents encoded in {record.encode_seconds:.0f} s; once all {record.shards} are written: "
        f"embedtune index merge {record.name}"
    )


@click.command("export", cls=EmbedtuneCommand)
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
@overwrite_option("Replace an existing collection of that name.")
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
