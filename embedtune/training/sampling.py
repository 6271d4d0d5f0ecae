"""How training rows are drawn into batches: per-row weights, and several datasets in one run.

**Weights.** A row's ``weight`` (a data column, or difficulty weighting, :mod:`embedtune.training.weighting`)
is honoured by *drawing*: each epoch draws as many rows as the dataset has, with replacement, each
with probability proportional to its weight, seeded by ``seed`` and the epoch. In expectation a
row of weight 3 contributes three times the gradient of a row of weight 1, which is what a weighted
loss would do. Sampling is chosen over weighting the loss because it applies to every loss
uniformly: sentence-transformers' losses (MNRL and its cached and symmetric variants, CoSENT, AnglE,
MarginMSE, triplet, Matryoshka around any of them) return one reduced number per batch and take no
per-sample weights, so a weighted loss would mean re-implementing each of them; and for the in-batch
losses a row is also a negative of the others, which a per-row factor on the loss would not weigh.
The drawn rows are batched by the duplicate-free sampler as before
(:func:`embedtune.training.distributed.batch_sampler`), so no text appears twice in a batch — a row
drawn twice goes to two batches — and under DDP the drawn epoch is cut into the same global batches
and per-process slices as unweighted rows (and bucketed by length, below, when that is on).

**Length buckets** (``length_window`` W > 1, :class:`LengthBucketedBatchSampler`). sentence-transformers
pads each text column of a batch to that column's longest text, so on a CPU a step costs about
batch size x the longest text of each column: a batch of short texts that holds one long document
pays for the document in every row. Each epoch the rows are shuffled (seeded by seed + epoch, as the
duplicate-free sampler does), the shuffled order is cut into windows of W batches, each window's rows
are sorted by length (characters of the row's longest text, a cheap proxy for its tokens), batches
are formed from that order by the same duplicate-free rule (a row whose text is already in the batch
waits for a later one), and the full batches are served in a seeded random order (a short last batch
stays last). A batch is then still drawn at random from the data: its rows are those of similar
length among a random window of rows, which rows those are changes with every epoch's shuffle (the
batches are no fixed partition), and the epoch does not run from short to long. The cost: a batch's
in-batch negatives are of a length similar to each other and to its positives, not a random mix of
lengths, so a step sees a less varied batch (and no negatives that differ by length alone).

W = 0 or 1 is the plain duplicate-free sampler; a larger W buckets more tightly (on data/debian,
batch 32, the padded tokens of an epoch fall to 0.54 of the plain sampler's with W = 8, 0.52 with
W = 16). The longest column is the sort key because it sets most of a row's cost (the document, next
to a short query); characters rank rows almost as tokens do and cost nothing to count, where a
tokenizer pass takes a while on a CPU. Under DDP the buckets are of *global* batches (N x batch
size), then sliced per process as ever; with weights, the drawn rows are bucketed.

**Several datasets.** sentence-transformers trains a ``DatasetDict`` with one batch sampler per
dataset and a multi-dataset sampler that picks which dataset the next batch comes from
(``proportional``: every batch of every dataset once per epoch, in a seeded random order;
``round-robin``: one batch of each in turn, until the smallest runs out). A batch never mixes
datasets, so each batch has one format and one loss. Under DDP the per-dataset samplers yield each
global batch as N consecutive slices; :class:`MultiDatasetSampler` picks datasets per *global*
batch, so all processes train on the same dataset (and loss) in a step, as the all-gather of the
in-batch losses needs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import embedtune.training.distributed as distributed
from embedtune.errors import EmbedtuneError

if TYPE_CHECKING:
    from datasets import Dataset
    from torch import Generator

MIXES = ("proportional", "round-robin")
# Columns that are not texts of the row: sentence-transformers' own dataset tag (its duplicate check skips it too).
_NOT_TEXT = {"dataset_name"}


def text_lengths(dataset: Dataset) -> Any:
    """Each row's length for the length buckets: the characters of its longest text (a numpy array).

    A step pads each column to its longest text in the batch, so the longest column of a row (the
    document, usually) is what makes it costly; characters stand in for tokens (read from the Arrow
    columns without tokenising). Columns that are not strings (scores, labels) count for nothing.
    """
    import numpy as np
    import pyarrow.compute as pc

    lengths = np.zeros(len(dataset), dtype=np.int64)
    columns = [
        name
        for name, feature in dataset.features.items()
        if name not in _NOT_TEXT and getattr(feature, "dtype", None) in ("string", "large_string")
    ]
    if len(dataset) == 0 or not columns:
        return lengths
    arrow = dataset.with_format("arrow")
    for name in columns:
        chars = pc.fill_null(pc.utf8_length(arrow[name]), 0).to_numpy()
        np.maximum(lengths, chars, out=lengths)
    return lengths


def __getattr__(name: str) -> Any:
    # LengthBucketedBatchSampler subclasses sentence-transformers' sampler, made on first use: importing
    # this module (with embedtune.training) loads neither torch nor sentence-transformers.
    if name == "LengthBucketedBatchSampler":
        return _length_bucketed_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _length_bucketed_class() -> type:
    import numpy as np
    import torch
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    if not callable(getattr(NoDuplicatesBatchSampler, "_iter_one_pass", None)):  # the one pass overridden below
        raise EmbedtuneError("this sentence-transformers has no NoDuplicatesBatchSampler._iter_one_pass to bucket")

    class LengthBucketedBatchSampler(NoDuplicatesBatchSampler):
        """sentence-transformers' ``NoDuplicatesBatchSampler`` whose batches hold rows of similar length
        (see the module docstring): each pass shuffles the rows, sorts each window of ``window``
        batches' rows by ``lengths`` (one per row; default :func:`text_lengths`), forms duplicate-free
        batches from that order as the parent does, and serves the full batches in a random order.

        Everything else is the parent's: seeding by ``seed`` + epoch, ``__len__``, ``drop_last``, the
        extra passes when duplicates leave a pass short of ``__len__`` batches.
        """

        def __init__(
            self,
            dataset: Dataset,
            batch_size: int,
            drop_last: bool,
            window: int,
            lengths: Sequence[int] | None = None,
            valid_label_columns: list[str] | None = None,
            generator: Generator | None = None,
            seed: int = 0,
        ) -> None:
            super().__init__(
                dataset,
                batch_size=batch_size,
                drop_last=drop_last,
                valid_label_columns=valid_label_columns,
                generator=generator,
                seed=seed,
            )
            if window < 1:
                raise EmbedtuneError(f"length window of {window} batches: at least 1")
            self.window = window
            self.lengths = np.asarray(text_lengths(self.dataset) if lengths is None else lengths)
            if len(self.lengths) != len(self.dataset):
                raise EmbedtuneError(f"{len(self.lengths)} lengths for {len(self.dataset)} rows")

        def bucketed_order(self) -> Any:
            """A shuffle of the rows (from the generator) with each window's rows sorted by length."""
            order = torch.randperm(len(self.dataset), generator=self.generator).numpy()
            span = self.window * self.batch_size
            for k, start in enumerate(range(0, len(order), span)):
                part = order[start : start + span]
                by_length = np.argsort(self.lengths[part], kind="stable")  # equal lengths keep the shuffle
                # Every other window long to short: a batch that runs over a window's end (rows put off
                # as duplicates shift the batches) then joins rows of a similar length on both sides.
                order[start : start + span] = part[by_length if k % 2 == 0 else by_length[::-1]]
            return order

        def _iter_one_pass(
            self,
            get_sample_values: Callable[[int], Any],
            has_overlap: Callable[[Any, set], bool],
        ) -> Iterator[list[int]]:
            """One pass: the parent's duplicate-free batching over :meth:`bucketed_order` instead of a
            plain shuffle, then the full batches in a random order and any short ones last."""
            order = self.bucketed_order()
            if len(order) == 0:
                return
            # The parent's pass: a linked list over the order; a row whose text is already in the batch
            # is skipped, stays where it is, and is the first the next batch tries.
            following = np.arange(1, len(order) + 1, dtype=np.int64)
            following[-1] = -1
            head = 0
            full: list[list[int]] = []
            short: list[list[int]] = []
            while head != -1:
                values: set = set()
                batch: list[int] = []
                current, previous = head, -1
                while current != -1:
                    after = int(following[current])
                    index = int(order[current])
                    sample = get_sample_values(index)
                    if has_overlap(sample, values):
                        previous, current = current, after
                        continue
                    batch.append(index)
                    if previous == -1:
                        head = after
                    else:
                        following[previous] = after
                    if len(batch) == self.batch_size:
                        break
                    values.update(sample)
                    current = after
                if len(batch) == self.batch_size:
                    full.append(batch)
                elif not self.drop_last:  # short batches come only at the end: every row left clashed
                    short.append(batch)
            for i in torch.randperm(len(full), generator=self.generator).tolist():
                yield full[i]
            yield from short

    # Named as a module attribute (found through __getattr__), so that it pickles and prints as one.
    LengthBucketedBatchSampler.__module__ = __name__
    LengthBucketedBatchSampler.__qualname__ = LengthBucketedBatchSampler.__name__
    return LengthBucketedBatchSampler


class WeightedBatchSampler:
    """Each epoch: ``len(dataset)`` rows drawn with probability proportional to ``weights`` (with
    replacement, seeded by ``seed`` and the epoch), batched by ``batches`` (a duplicate-free batch
    sampler factory over a dataset), indices mapped back to ``dataset``'s rows."""

    def __init__(
        self, dataset: Dataset, weights: Sequence[float], batches: Callable[[Dataset], object], seed: int
    ) -> None:
        import numpy as np

        if len(weights) != len(dataset):
            raise EmbedtuneError(f"{len(weights)} weights for {len(dataset)} rows")
        w = np.asarray(weights, dtype=np.float64)
        if not (np.isfinite(w).all() and (w > 0).all()):
            raise EmbedtuneError("weights must be finite numbers above 0")
        self.dataset, self.batches, self.seed, self.epoch = dataset, batches, seed, 0
        self.probabilities = w / w.sum()
        self._shape = batches(dataset)  # the same row count gives the same length, batch size, drop_last
        self.batch_size = self._shape.batch_size
        self.drop_last = self._shape.drop_last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._shape)

    def draw(self, epoch: int) -> list[int]:
        """The row indices of ``epoch``'s draw (as many as there are rows, repeats allowed)."""
        import numpy as np

        rng = np.random.default_rng([self.seed, epoch])
        return rng.choice(len(self.probabilities), size=len(self.probabilities), p=self.probabilities).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        drawn = self.draw(self.epoch)
        inner = self.batches(self.dataset.select(drawn))
        inner.set_epoch(self.epoch)
        for batch in inner:
            yield [drawn[i] for i in batch]


class BatchSamplers:
    """The trainer's ``batch_sampler`` function: the duplicate-free sampler of
    :mod:`embedtune.training.distributed`, drawing by weight for a dataset that has weights, and
    bucketing rows by length when ``length_window`` (W, in batches) is above 1.

    ``weighted`` pairs each trainer dataset object with its weights (None: unweighted). The trainer
    calls this once per dataset of a ``DatasetDict``, with the dataset object it was given, which is
    how the weights are found (they are not a column the trainer sees). ``length_window`` 0 or 1:
    the plain duplicate-free sampler; W > 1: :class:`LengthBucketedBatchSampler` over windows of W
    (global) batches, over the drawn rows when weighted.
    """

    def __init__(self, weighted: Sequence[tuple[Dataset, Sequence[float] | None]] = (), length_window: int = 0) -> None:
        if length_window < 0:
            raise EmbedtuneError(f"length window of {length_window} batches: 0 (off) or more")
        self.weighted = list(weighted)
        self.length_window = length_window

    def __reduce__(self):
        # The trainer pickles its arguments into every checkpoint (training_args.bin, read by no resume):
        # keep the rows and weights out of it; a resumed run reads them from the data again. The length
        # window is a setting, not data: it stays.
        return (type(self), ((), self.length_window))

    def __call__(self, dataset: Dataset, batch_size: int, drop_last: bool, **options: Any):
        """``options``: the rest of sentence-transformers' batch sampler call (valid_label_columns, generator, seed)."""
        if self.length_window > 1:
            options["whole"] = functools.partial(_length_bucketed_class(), window=self.length_window)
        weights = next((w for d, w in self.weighted if d is dataset), None)
        if weights is None:
            return distributed.batch_sampler(dataset, batch_size, drop_last, **options)
        if options.get("generator") is None:  # the duplicate-free sampler seeds it with seed + epoch
            import torch

            options["generator"] = torch.Generator()

        def batches(rows: Dataset):
            return distributed.batch_sampler(rows, batch_size, drop_last, **options)

        return WeightedBatchSampler(dataset, weights, batches, options.get("seed", 0))


class MultiDatasetSampler:
    """The trainer's ``multi_dataset_batch_sampler`` function for ``mix`` (see the module docstring);
    a class, not a closure, because the trainer pickles its arguments with every checkpoint."""

    def __init__(self, mix: str) -> None:
        if mix not in MIXES:
            raise EmbedtuneError(f"unknown mix '{mix}' (choose from {', '.join(MIXES)})")
        self.mix = mix

    def __call__(self, dataset, batch_samplers: list, generator: Generator | None = None, seed: int = 0):
        from sentence_transformers.base.sampler import ProportionalBatchSampler, RoundRobinBatchSampler

        cls = ProportionalBatchSampler if self.mix == "proportional" else RoundRobinBatchSampler
        processes = distributed.world_size()
        if processes == 1:
            return cls(dataset, batch_samplers, generator=generator, seed=seed)
        grouped = [_Grouped(sampler, processes) for sampler in batch_samplers]
        return distributed.SlicedBatchSampler(cls(dataset, grouped, generator=generator, seed=seed), processes)


class _Grouped:
    """A sliced (DDP) batch sampler whose N consecutive slices are joined into their global batch again."""

    def __init__(self, sampler, processes: int) -> None:
        self.sampler, self.processes = sampler, processes
        self.batch_size = sampler.batch_size * processes
        self.drop_last = True

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) // self.processes

    def __iter__(self) -> Iterator[list[int]]:
        slices = iter(self.sampler)
        for first in slices:
            yield first + [i for _ in range(self.processes - 1) for i in next(slices)]


def epoch_rows(mix: str, sizes: Sequence[int]) -> int:
    """The rows one epoch goes through: all of them (proportional), or as many from each dataset as the
    smallest has (round-robin stops when the smallest runs out). The schedule counts these."""
    if len(sizes) <= 1 or mix == "proportional":
        return sum(sizes)
    return len(sizes) * min(sizes)
