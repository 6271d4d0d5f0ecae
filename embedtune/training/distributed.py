"""One training run over several processes (``torchrun`` / ``accelerate launch``): who does what.

The launcher describes the run in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); with
one process everything here is a no-op, so a plain ``embedtune train`` is untouched. What this
module owns, and the failures it designs out:

* **Joining the process group before the run touches a file** (:func:`start`, through accelerate's
  ``PartialState``, the object the Hugging Face trainer uses afterwards: gloo on CPU, NCCL on CUDA),
  so that the set-up can already hand results from rank 0 to the others (over a gloo group, also
  under NCCL: Python objects such as the training rows stay off the GPU).
* **Work done once** (:func:`on_main`): data validation, the dev-set choice, the checkpoints folder,
  the baseline evaluation and the output run on rank 0, and their result *or their failure* is
  broadcast. A rank that waits at a bare barrier for a rank 0 that raised waits until the
  collective's timeout (30 minutes); here it stops at once with :class:`PeerStopped`.
* **The same batches as one process with N times the batch** (:func:`batch_sampler`): the
  duplicate-free sampler draws one global batch of ``N x B`` rows with no text twice, cut into N
  slices of B, one per rank. A text is then never an in-batch negative of its twin on another rank
  (the losses gather the other ranks' embeddings as negatives), every rank gets the same number of
  full batches (a rank with one more batch, or a short last batch, would hang or break the
  all-gather), and the global batches are the full batches of a single process with batch ``N x B``
  (the short last one is dropped).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from embedtune.errors import EmbedtuneError
from embedtune.settings import SettingError

if TYPE_CHECKING:
    from datasets import Dataset
    from torch import Generator

T = TypeVar("T")
# How long the other ranks wait in a collective, e.g. for rank 0's mining or dev evaluation; the
# collectives' default (30 minutes) would cut off a long mining run. A rank that dies ends the run at
# once anyway (the launcher stops the others).
WAIT = timedelta(hours=6)


class PeerStopped(EmbedtuneError):
    """Raised on the other ranks when the work rank 0 does for all of them failed (rank 0 raises the cause)."""


def world_size() -> int:
    """Processes in the run, as the launcher set it (1 when not launched by torchrun or accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 when not launched by torchrun or accelerate)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes: rank 0, or the only process."""
    return rank() == 0


def device() -> str | None:
    """The device a rank trains on under CUDA (``cuda:LOCAL_RANK``); None: the usual choice."""
    if world_size() == 1:
        return None
    import torch

    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def start() -> None:
    """Join the launcher's process group (gloo on CPU, NCCL on CUDA), once; nothing with one process."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState(timeout=WAIT)  # a singleton: the trainer's TrainingArguments reuse this state


def stop() -> None:
    """Leave the process group, if this process joined one. A process that exits with a gloo group
    still open can abort ('terminate called without an active exception', SIGABRT) while the
    group's threads are torn down, turning a finished run into a failed exit status; the command
    line goes further (:func:`exit_rank`)."""
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def exit_rank(code: int) -> NoReturn:
    """End this launched process now with ``code``, without the interpreter's teardown.

    Leaving the group is not always enough: the teardown frees what is left of torch.distributed's
    C++ side (gloo's threads among it) in no set order and can still abort a rank whose run has
    finished (SIGABRT, seen in CI), and the launcher then reports the whole run as failed. Every
    file is written (and renamed) before this point, so only the streams need flushing.
    """
    stop()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


@functools.cache
def _object_group():
    """The group that carries Python objects: gloo, on the CPU. Over NCCL the pickled objects (the
    training rows among them) would be copied through GPU memory."""
    import torch.distributed as dist

    return dist.new_group(backend="gloo", timeout=WAIT) if dist.get_backend() != "gloo" else None


def _broadcast(value: object) -> object:
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=_object_group())
    return box[0]


def on_main(work: Callable[[], T]) -> T:
    """Run ``work`` on rank 0 only and return its result on every rank.

    The result must pickle. When ``work`` raises, rank 0 raises it and every other rank raises
    :class:`PeerStopped` naming it, instead of waiting for a result that never comes.
    """
    if world_size() == 1:
        return work()
    error: BaseException | None = None
    outcome: tuple[bool, object] | None = None
    if is_main():
        try:
            outcome = (True, work())
        except BaseException as e:  # sent to the other ranks, then raised here
            error, outcome = e, (False, str(e) or type(e).__name__)
    ok, value = _broadcast(outcome)  # type: ignore[misc]
    if error is not None:
        raise error
    if not ok:
        raise PeerStopped(f"rank 0 stopped: {value}")
    return value  # type: ignore[return-value]


def check_rows(rows: int, batch_size: int) -> None:
    """Refuse a DDP run whose processes together take more rows a step than the data has."""
    if world_size() > 1 and rows < batch_size * world_size():
        raise SettingError(
            "batch_size",
            f"{world_size()} processes x batch size {batch_size} take {batch_size * world_size()} rows a step, "
            f"more than the {rows} training rows",
        )


def gathers(loss: object) -> bool:
    """Whether ``loss`` (maybe inside a MatryoshkaLoss) takes the other processes' texts as in-batch negatives."""
    return bool(getattr(getattr(loss, "loss", loss), "gather_across_devices", False))


def batch_sampler(
    dataset: Dataset,
    batch_size: int,
    drop_last: bool,
    valid_label_columns: list[str] | None = None,
    generator: Generator | None = None,
    seed: int = 0,
    whole: Callable[..., Any] | None = None,
):
    """The duplicate-free batch sampler; under DDP, global batches of N x ``batch_size`` cut into slices.

    The signature is the one sentence-transformers calls a ``batch_sampler`` function with, plus
    ``whole``: the sampler class of the global batches (default sentence-transformers' own
    ``NoDuplicatesBatchSampler``; :mod:`embedtune.training.sampling` passes its length-bucketed one).
    """
    if whole is None:
        from sentence_transformers.base.sampler import NoDuplicatesBatchSampler as whole

    processes = world_size()
    sampler = whole(
        dataset,
        batch_size=batch_size * processes,
        drop_last=drop_last or processes > 1,  # the all-gather needs a full slice on every rank
        valid_label_columns=valid_label_columns,
        generator=generator,
        seed=seed,
    )
    return sampler if processes == 1 else SlicedBatchSampler(sampler, processes)


class SlicedBatchSampler:
    """Each global batch of ``sampler`` as ``processes`` consecutive slices; accelerate deals slice k to rank k.

    Its length is a multiple of ``processes``, so accelerate's shard gives every rank the same count.
    """

    def __init__(self, sampler, processes: int) -> None:
        self.whole, self.processes = sampler, processes
        self.batch_size = sampler.batch_size // processes
        self.drop_last = True

    def set_epoch(self, epoch: int) -> None:
        self.whole.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.whole) * self.processes

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.whole:
            if len(batch) < self.whole.batch_size:
                continue  # a short pass of the duplicate-free sampler: no full slice for every rank
            for k in range(self.processes):
                yield batch[k * self.batch_size : (k + 1) * self.batch_size]
