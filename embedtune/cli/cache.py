"""``embedtune cache``: inspect or empty the encoding cache."""

from __future__ import annotations

import os
from pathlib import Path

import click

from embedtune.cli.app import EmbedtuneGroup, emit, json_option
from embedtune.errors import EmbedtuneError


def cache_directory() -> Path:
    """The cache folder both commands read; one that is not a folder is an error naming it (and the variable
    that chose it), not an empty cache: "0 vector spaces" would hide a mistyped ``$EMBEDTUNE_CACHE``."""
    from embedtune.encoding.cache import CACHE_ENV, default_cache_dir

    directory = default_cache_dir()
    if directory.exists() and not directory.is_dir():
        chosen = f" (${CACHE_ENV})" if os.environ.get(CACHE_ENV) else ""
        raise EmbedtuneError(f"{directory}{chosen}: a file, not a folder; the encoding cache must be a folder")
    return directory


@click.group(cls=EmbedtuneGroup)
def cache() -> None:
    """Inspect or empty the encoding cache ($EMBEDTUNE_CACHE, default ~/.cache/embedtune/encodings).

    \b
    index build/add, eval --model and mine keep the vectors they encode there, one SQLite file per
    vector space (model as loaded, precision, device type, prompt), so that unchanged texts are never
    encoded twice. Nothing is evicted: clear it when it grows, at any time.
    """


@cache.command("info")
@json_option("Print one JSON document (schema embedtune.cache.info/1: {directory, spaces: [...]}).")
def cache_info(as_json: bool) -> None:
    """List the cached vector spaces: texts, size on disk, model, precision and prompt."""
    import datetime

    from embedtune.encoding import EncodingCache

    directory = cache_directory()
    spaces = EncodingCache(directory).spaces()
    if as_json:
        rows = [
            {"path": str(s.path), "texts": s.texts, "disk_bytes": s.disk_bytes, "modified": s.modified} | s.description
            for s in spaces
        ]
        emit("cache.info", {"directory": directory, "spaces": rows})
        return
    total = sum(s.disk_bytes for s in spaces)
    click.echo(f"{directory}: {len(spaces)} vector space(s), {total / 1e6:,.1f} MB")
    for s in spaces:
        d = s.description
        modified = datetime.datetime.fromtimestamp(s.modified).strftime("%Y-%m-%d %H:%M")
        prompt = f", prompt {d['prompt']!r}" if d.get("prompt") else ""
        click.echo(
            f"  {s.path.name}  {s.texts:>10,} texts {s.disk_bytes / 1e6:>9,.1f} MB  {modified}  "
            f"{d.get('source') or '?'} (fingerprint {str(d.get('model'))[:12]}), "
            f"{d.get('precision')} on {d.get('device')}{prompt}"
        )


@cache.command("clear")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option("Print the result as one JSON document (schema embedtune.cache.clear/1).")
def cache_clear(yes: bool, as_json: bool) -> None:
    """Delete every cached vector (the next encoding of each text runs the model again)."""
    from embedtune.encoding import EncodingCache

    directory = cache_directory()
    if not yes:
        click.confirm(f"delete the encoding cache in {directory}?", abort=True, err=True)  # stdout: the result only
    spaces, freed = EncodingCache(directory).clear()
    if as_json:
        emit("cache.clear", {"directory": directory, "spaces_deleted": spaces, "bytes_freed": freed})
        return
    click.echo(f"{directory}: {spaces} vector space(s) deleted, {freed / 1e6:,.1f} MB freed")
