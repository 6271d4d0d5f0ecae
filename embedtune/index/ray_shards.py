"""Sharded encoding on a Ray cluster, merged into one index, in one call (the optional extra ``ray``).

Ray Data hands the shard numbers to a pool of actors, one per worker (a GPU each where the cluster
has GPUs, else a CPU); each actor loads the model once and encodes the shards it is given with
:class:`embedtune.index.shards.ShardEncoder`, exactly as a one-shard-per-process run does, into a
temporary folder beside the index. The driver then merges them (:mod:`embedtune.index.merge`) and
removes the folder. Moving shards through files rather than through Ray's object store keeps the
driver's memory bounded by the merge, not by the corpus, and makes a Ray build equal to a scheduled
one by construction; it needs the indexes folder on storage every worker sees (NFS, a shared disk),
as any multi-node job writing one output does. An error in an actor (a bad corpus line) comes back as
the same one-line error the process would have raised.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from embedtune.data import corpus_file
from embedtune.encoding import EncodeSettings
from embedtune.errors import EmbedtuneError, error_line
from embedtune.index.manifest import DEFAULT_INDEXES_DIR, Manifest, check_index_name
from embedtune.index.merge import merge_shards
from embedtune.index.shards import ShardEncoder, ShardSettings, shard_dir
from embedtune.index.types import BuildSettings
from embedtune.io import check_destination, check_writable, make_temp_dir
from embedtune.models import resolve_model_path


class _ShardActor:
    """A Ray Data actor: the model, loaded once, and the shards of one build it encodes on request."""

    def __init__(self, model: str, encode: dict, source: str, folder: str, name: str, shards: int):
        self.encoder = ShardEncoder(model, EncodeSettings(**encode))
        self.source, self.folder, self.name, self.shards = Path(source), Path(folder), name, shards

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode the batch's shards; an EmbedtuneError comes back as its message (Ray would keep only its type
        name), for the driver to raise as the one-line error a process would have printed."""
        errors = []
        for shard in batch["shard"]:
            target = shard_dir(self.folder, self.shards, int(shard))
            try:
                self.encoder.write(
                    self.source, target, self.name, self.shards, int(shard), overwrite=False, show_progress=False
                )
                errors.append("")
            except EmbedtuneError as e:
                errors.append(str(e))
        return {"shard": batch["shard"], "error": np.asarray(errors, dtype=object)}


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise EmbedtuneError("ray is not installed: pip install 'embedtune[ray]'") from e
    return ray


def build_with_ray(
    corpus: str | Path,
    name: str,
    *,
    address: str | None = None,
    shards: int | None = None,
    model: str | Path | None = None,
    encode: EncodeSettings | None = None,
    build: BuildSettings | str = "auto",
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Manifest:
    """Encode ``corpus`` in ``shards`` shards on Ray and merge them into index ``indexes_dir/name``.

    Connects to the Ray cluster at ``address`` (``None``: ``RAY_ADDRESS`` or a new local instance),
    unless this process already called ``ray.init``. ``shards`` defaults to one per actor. Other
    parameters are as for :func:`~embedtune.index.build_index`; the result equals its result.
    """
    ShardSettings(shards=shards, ray=address or "")
    encode = encode or EncodeSettings()
    target = Path(indexes_dir) / check_index_name(name)
    check_writable(Path(indexes_dir), directory=True)
    check_destination(target, overwrite)
    model_path = resolve_model_path(model)
    source = corpus_file(Path(corpus))
    if not source.is_file():
        raise EmbedtuneError(f"{source}: no such corpus file")
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address=address or None, log_to_driver=show_progress)
    if not show_progress:  # Ray Data's progress bars and per-stage log lines
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    actors = min(shards or gpus or cpus, gpus or cpus)
    shards = shards or actors
    Path(indexes_dir).mkdir(parents=True, exist_ok=True)
    folder = make_temp_dir(target, "shards")
    try:
        args = (str(model_path), asdict(encode), str(source.resolve()), str(folder.resolve()), name, shards)
        per_actor = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        dataset = ray.data.from_items([{"shard": k} for k in range(shards)]).map_batches(
            _ShardActor, fn_constructor_args=args, batch_size=1, concurrency=actors, **per_actor
        )
        try:
            errors = [row["error"] for row in dataset.take_all() if row["error"]]
        except Exception as e:  # a failure of Ray itself (a lost node, an actor that could not start)
            raise EmbedtuneError(f"encoding on Ray failed: {error_line(e, last=True)}") from e
        if errors:
            raise EmbedtuneError(errors[0])
        return merge_shards(
            name,
            indexes_dir=indexes_dir,
            shards_dir=folder,
            build=build,
            overwrite=overwrite,
            show_progress=show_progress,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
