"""What decides a training run: :class:`TrainConfig`, declared once and checked at construction.

Every field is a :func:`~embedtune.settings.setting` with its help, choices and range, so the
command line, a YAML config and the Python API refuse a bad value with the same one-line
:class:`~embedtune.settings.SettingError` before any data or model is loaded: a batch size of 0 or
an unknown scheduler fails here, not as a ``ZeroDivisionError`` minutes into a run. Checks that
relate fields (a loss that needs in-batch negatives at batch size 1, early stopping without a dev
set) follow the per-field ones.

:class:`DevSettings` is the part of the config the dev evaluation reads, so that the evaluator does
not depend on the whole training config. The names of the dev metrics (``metric`` and the trainer's
keys such as ``eval_dev_cosine_ndcg@10``) live here too, beside the setting that chooses them.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from embedtune import settings
from embedtune.data import default_data_dir, qrels_path
from embedtune.encoding import PRECISIONS, TRAIN_PRECISIONS
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.metrics import METRIC_FAMILIES
from embedtune.settings import SettingError, setting
from embedtune.training.losses import ALIASES, LOSSES, LossParams
from embedtune.training.sampling import MIXES

# Fields that say how to run, not what to train: they may differ between a run and its resume.
RUN_OPTIONS = (
    "output",
    "overwrite",
    "resume",
    "keep_checkpoints",
    "show_progress",
    "report_to",
    "license",
    "dataset_ids",
)
REPORTERS = ("none", "tensorboard", "wandb")
LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "polynomial")
POOLINGS = ("mean", "cls", "max")
LOSS_NAMES = ("auto", *LOSSES, *ALIASES)
WEIGHT_BY = ("none", "difficulty")  # row weights besides a weight column (embedtune.training.weighting)

DEV_NAME = "dev"
DEFAULT_DEV_SPLIT = "dev"  # the split dev_split="auto" looks for
AUTO_DEV = "auto"  # the dev split when there is one, else a held-out slice of the training queries
NO_DEV = "none"  # no dev set from the training data (dev_data still counts)
# embedtune eval's metric families (one vocabulary for dev and eval), the usual checkpoint pickers first.
IR_METRICS = ("ndcg", "mrr", *(f for f in METRIC_FAMILIES if f not in ("ndcg", "mrr")))
SIMILARITY_METRICS = ("spearman", "pearson")
_IR_METRIC = re.compile(rf"^({'|'.join(IR_METRICS)})@(\d+)$")
# Old dev metric names -> eval's: sentence-transformers calls the hit rate "accuracy".
_RENAMED_METRICS = {"accuracy": "hit_rate"}


def parse_metric(metric: str, scored: bool) -> tuple[str, int | None]:
    """``metric`` as (family, k) for a scored-pair (``scored``) or a retrieval dev set; ``auto`` resolved."""
    if metric == "auto":
        return ("spearman", None) if scored else ("ndcg", 10)
    if scored:
        if metric not in SIMILARITY_METRICS:
            raise SettingError(
                "metric", f"'{metric}' does not apply to scored pairs; use {' or '.join(SIMILARITY_METRICS)}"
            )
        return metric, None
    match = _IR_METRIC.match(metric)
    if not match or int(match.group(2)) < 1:
        raise SettingError(
            "metric", f"unknown dev metric '{metric}'; use one of {', '.join(m + '@k' for m in IR_METRICS)}"
        )
    return match.group(1), int(match.group(2))


def _current_metric(metric: str) -> str:
    """``metric`` in eval's vocabulary: an old name (``accuracy@10``, from configs written before the dev
    metrics took eval's names) becomes the new one (``hit_rate@10``), with a warning that says so."""
    family, at, k = metric.partition("@") if isinstance(metric, str) else ("", "", "")
    if family not in _RENAMED_METRICS or not at:
        return metric
    new = f"{_RENAMED_METRICS[family]}@{k}"
    warnings.warn(
        f"metric: '{metric}' is deprecated, use '{new}' (the name embedtune eval reports); read as '{new}'",
        EmbedtuneWarning,
        stacklevel=4,
    )
    return new


def metric_label(key: str) -> str:
    """The short name of a trainer metric key: ``eval_dev_cosine_ndcg@10`` -> ``ndcg@10``."""
    name = key.removeprefix(f"eval_{DEV_NAME}_")
    return name.removeprefix("cosine_").removesuffix("_cosine")


@dataclass(frozen=True)
class DevSettings:
    """What the dev evaluation reads: where the dev set is, how it is sampled, which metric picks the checkpoint.

    ``data`` is the training data: without ``dev_data``, its ``dev_split`` is the dev set when it is
    a BEIR folder. ``score_range`` scales the scores of a scored-pair dev file as it does the
    training file's.
    """

    data: Path
    dev_data: Path | None
    dev_split: str
    dev_queries: int
    dev_corpus: int | None
    metric: str
    seed: int
    score_range: tuple[float, float] | None
    dev_holdout: float = 0.1
    split: str = "train"  # the training split, from which a held-out dev slice comes

    @property
    def split_name(self) -> str:
        """The qrels split to read: ``auto`` looks for ``dev``."""
        return DEFAULT_DEV_SPLIT if self.dev_split == AUTO_DEV else self.dev_split

    def has_split(self) -> bool:
        """Whether ``data``'s qrels hold the dev split to use (never under ``dev_split='none'``)."""
        return self.dev_split != NO_DEV and qrels_path(self.data, self.split_name).is_file()


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved resolved with the model so it can be repeated.

    ``temperature`` is the softmax temperature of the in-batch and CoSENT-style losses (0.05 is
    sentence-transformers' scale 20). ``max_steps`` overrides ``epochs``. ``checkpoint_steps`` is how
    often the dev set is evaluated and a checkpoint saved. A schedule setting left at None (epochs,
    batch size, learning rate, warm-up, temperature, checkpoint interval, early stopping) is chosen
    from the data by :func:`embedtune.training.schedule.choose_schedule`, which returns the config
    with every one of them filled in; a value the user gives always wins. ``pooling``/``normalize``
    apply only to plain Hugging Face checkpoints, which have no pooling yet.
    """

    output: Path = setting(help="Model directory to write (atomically, at the end).", flag=("--output", "-o"))
    model: str = setting(
        "default",
        help="Base model: 'default' (bundled all-MiniLM-L6-v2), a sentence-transformers directory, or a Hugging "
        "Face encoder checkpoint directory (BERT, RoBERTa, DistilBERT, MPNet, ...) to which pooling is added.",
        flag=("--model", "-m"),
    )
    data: Path = setting(
        default_factory=default_data_dir,
        help="Training data: a BEIR folder (every relevant document of the split is a positive), or a "
        "jsonl/csv/tsv/parquet file or folder of files. Columns decide the format: query/anchor + positive "
        "[+ negative_1..n] [+ scores]; or sentence1 + sentence2 + score.",
    )
    split: str = setting("train", help="Qrels split of a BEIR data folder to train on.")
    score_range: tuple[float, float] | None = setting(
        None, help="Scale of a score column, e.g. '0 5' for STS-B; scores are rescaled to 0..1 (default: 0 1)."
    )
    # Row weights and several datasets (embedtune.training.sampling, .mixing, .weighting)
    more_data: tuple[Path, ...] = setting(
        (),
        help="More training datasets, each read and checked on its own and trained together with data (on the "
        "command line: repeat --data). Each gets the loss its data picks, or loss for all; the dev set comes "
        "from the first.",
        cli=False,
    )
    mix: str = setting(
        "proportional",
        help="How batches are drawn from several datasets (each batch from one): proportional = every batch of "
        "every dataset once per epoch, in seeded random order; round-robin = one of each in turn until the "
        "smallest runs out.",
        choices=MIXES,
    )
    weight_by: str = setting(
        "none",
        help="difficulty: weight rows by how hard the base model finds them (1 - cosine(query, positive), or "
        "the cosine's distance from the score), clipped to 0.5..2 of the mean, times any weight column. Rows "
        "are drawn with probability proportional to their weight.",
        choices=WEIGHT_BY,
    )
    loss: str = setting(
        "auto",
        help="Loss by name; auto = cosent for scored pairs, mnrl otherwise. One of: auto, " + ", ".join(LOSSES) + ".",
        choices=LOSS_NAMES,
    )
    temperature: float | None = setting(
        None, help="Softmax temperature (1/scale) (default: 0.05, see embedtune.training.schedule).", above=0
    )
    mini_batch_size: int = setting(32, help="GradCache chunk of cached-mnrl (bounds memory).", min=1)
    triplet_margin: float = setting(0.1, help="Cosine margin of the triplet loss.", min=0)
    matryoshka_dims: tuple[int, ...] | None = setting(
        None, help="Also train truncated embeddings, e.g. '384,256,128,64'.", min=1
    )
    pooling: str | None = setting(None, help="Pooling added to a plain HF checkpoint.", choices=POOLINGS)
    normalize: bool = setting(
        True,
        help="L2-normalise a plain HF checkpoint's embeddings, so inner product is cosine (--no-normalize: keep "
        "the pooled vectors as they are).",
        flag="--no-normalize",
    )
    query_prompt: str | None = setting(
        None, help="Prefix for queries, e.g. 'query: ' (E5) — saved as the model's 'query' prompt."
    )
    document_prompt: str | None = setting(None, help="Prefix for documents, e.g. 'passage: ' (E5).")
    epochs: float | None = setting(
        None,
        help="Passes over the data (default: from its size, several for a small set and less than one for a large "
        "one; see embedtune.training.schedule).",
        above=0,
    )
    max_steps: int | None = setting(None, help="Stop after this many optimiser steps (overrides epochs).", min=1)
    batch_size: int | None = setting(
        None,
        help="Rows per batch: each query's in-batch negatives are the batch's other positives (and negatives) "
        "(default: 32, smaller for a set too small to fill 16 batches).",
        min=1,
    )
    gradient_accumulation_steps: int = setting(
        1,
        help="Average gradients over N batches. This does NOT add in-batch negatives (each batch still sees "
        "only its own); for more negatives use a bigger batch size with the cached-mnrl loss.",
        min=1,
        flag="--grad-accum",
    )
    learning_rate: float | None = setting(
        None,
        help="Peak learning rate (default: 5e-5 at batch size 32, scaled by the square root of the batch size).",
        min=0,
        flag="--lr",
    )
    lr_scheduler: str = setting("linear", help="Learning-rate schedule after warm-up.", choices=LR_SCHEDULERS)
    # Below 1: the trainer reads a warm-up of 1 or more as a number of steps, not as a ratio.
    warmup_ratio: float | None = setting(
        None, help="Fraction of steps of warm-up (default: 0.1, at most 500 steps).", min=0, below=1
    )
    weight_decay: float = setting(0.01, help="AdamW weight decay.", min=0)
    max_grad_norm: float = setting(1.0, help="Clip gradients to this norm (0 = no clipping).", min=0)
    max_seq_length: int | None = setting(
        None,
        help="Tokens kept per text in training (default: from the data: the 95th percentile of the token lengths "
        "of a seeded sample of queries and of documents, rounded up to a multiple of 8, at least 32, at most the "
        "base model's limit). The saved model keeps its own limit: inference_max_seq_length.",
        min=8,
    )
    inference_max_seq_length: int | None = setting(
        None,
        help="Token limit saved with the model, used by index build, search and the dev evaluation "
        "(default: the base model's limit, or max_seq_length when that is larger).",
        min=8,
    )
    length_window: int = setting(
        0,
        help="Batch texts of similar length: shuffle, sort each window of N batches by length, then shuffle the "
        "batches (duplicate-free as ever); less padding, so faster steps on a CPU (0 or 1 = off).",
        min=0,
    )
    freeze_embeddings: bool = setting(False, help="Do not train the token embeddings.")
    freeze_layers: int = setting(0, help="Do not train the lowest N transformer layers.", min=0)
    # Augmentation and layer-wise learning rates (embedtune.training.augment, embedtune.training.optim).
    corpus_pairs: float = setting(
        0.0,
        help="Extra (pseudo-query, passage) pairs per labelled pair, built (seeded) from the corpus of a BEIR "
        "data folder: a title -> its text, else a sentence -> the rest of its document (0 = off).",
        min=0,
    )
    query_noise: float = setting(
        0.0,
        help="Share of training queries given one seeded edit before training: a word deleted, two adjacent "
        "words swapped, or a word replaced by a WordNet synonym (needs Debian's wordnet-base) (0 = off).",
        min=0,
        max=1,
    )
    layer_lr_decay: float = setting(
        1.0,
        help="Layer-wise learning-rate decay: the top transformer layer trains at the learning rate, each layer "
        "below at this times the one above, the embeddings lowest; pooling and heads at the full rate (1 = off).",
        above=0,
        max=1,
    )
    dev: bool = setting(
        True, help="Evaluate on a dev set and keep the best checkpoint (off: neither).", flag="--no-dev"
    )
    dev_data: Path | None = setting(
        None, help="Dev set (BEIR folder or pair/scored-pair file); default: the dev split of a BEIR data folder."
    )
    dev_split: str = setting(
        AUTO_DEV,
        help="Qrels split used as the dev set. auto: the 'dev' split of a BEIR folder, else a held-out slice of "
        "the training queries (dev_holdout); none: no dev set from the training data.",
    )
    dev_holdout: float = setting(
        0.1,
        help="Share of the training queries held out (seeded, whole queries with all their positives, at most "
        "dev_queries) as the dev set when the data has no dev split; too few queries for 5: none held out.",
        min=0,
        below=1,
    )
    dev_queries: int = setting(
        500, help="Dev queries sampled (seeded), at most; fewer where the run is too short to pay for them.", min=1
    )
    dev_corpus: int | None = setting(
        None,
        help="Documents in the dev corpus: the dev queries' relevant documents, then the candidates BM25 and the "
        "base model rank highest for them (default: sized so that dev evaluation costs at most 15% of the run).",
        min=1,
    )
    metric: str = setting(
        "auto",
        help="Dev metric that picks the kept checkpoint, named as embedtune eval names it: ndcg@10, mrr@10, recall@k, "
        "map@k, hit_rate@k; spearman or pearson for scored pairs.",
    )
    checkpoint_steps: int | None = setting(
        None,
        help="Evaluate on dev and save a checkpoint every N steps (default: at the end of every epoch of a run of "
        "two or more, with early stopping; else 4 times per run; spaced further apart where evaluating would "
        "cost over 15% of the run, measured as it goes).",
        min=1,
    )
    early_stopping_patience: int | None = setting(
        None,
        help="Stop when the dev metric has not improved for N evaluations; 0: never stop early (default: 2 when "
        "there is a dev set and 4 or more evaluations, else 0).",
        min=0,
        flag="--early-stopping",
    )
    seed: int = setting(42, help="Seed for initialisation, batching and dropout: equal seeds give equal runs.", min=0)
    precision: str = setting(
        "auto",
        help="auto = bf16 autocast (fp32 master weights) where one timed step at the start shows it faster than "
        "fp32 and with the same loss (CPUs with AMX or AVX512-BF16), or the GPU has bf16; else fp32.",
        choices=TRAIN_PRECISIONS,
    )
    overwrite: bool = setting(False, help="Replace the output (and its checkpoints) if they exist.")
    resume: bool = setting(
        False,
        help="Continue the run whose checkpoints are in <output>.checkpoints (after a kill); the other "
        "settings must be the same as the first time.",
    )
    keep_checkpoints: bool = setting(False, help="Keep <output>.checkpoints after a successful run.")
    show_progress: bool = setting(True, help="Show progress bars.", cli=False)
    report_to: str = setting(
        "none",
        help="Experiment tracking: tensorboard writes event files into the model folder's runs/ (needs "
        "tensorboardX: pip install 'embedtune[tensorboard]'); wandb logs to Weights & Biases (needs wandb).",
        choices=REPORTERS,
    )
    license: str | None = setting(
        None, help="License in the model card, e.g. apache-2.0 (default: the base model's, when its card names one)."
    )
    dataset_ids: tuple[str, ...] | None = setting(
        None, help="Hub ids of the datasets the training data comes from, for the model card's front matter."
    )

    def __post_init__(self) -> None:
        self.metric = _current_metric(self.metric)
        if self.precision in PRECISIONS and self.precision not in TRAIN_PRECISIONS:  # a clearer word than "not one of"
            raise SettingError(
                "precision",
                f"'{self.precision}' is for encoding only; training runs in {', '.join(TRAIN_PRECISIONS)}",
            )
        settings.validate(self)
        self._check_relations()

    def _check_relations(self) -> None:
        """Values that are fine alone but not together."""
        if len({Path(p).resolve() for p in (self.data, *self.more_data)}) < 1 + len(self.more_data):
            raise SettingError("more_data", "a dataset is given twice (data and more_data must all differ)")
        if self.score_range is not None and not self.score_range[0] < self.score_range[1]:
            raise SettingError("score_range", f"the low end must be below the high end, got {list(self.score_range)}")
        if self.metric not in ("auto", *SIMILARITY_METRICS):
            parse_metric(self.metric, scored=False)
        if self.early_stopping_patience and not self.dev:
            raise SettingError("early_stopping_patience", "needs the dev evaluation (dev=True)")
        if self.early_stopping_patience and self.dev_split == NO_DEV and self.dev_data is None:
            raise SettingError("early_stopping_patience", "needs a dev set: dev_split='none' and no dev_data")
        loss = LOSSES.get(ALIASES.get(self.loss, self.loss))  # None for auto: mnrl or cosent, both in-batch
        if self.batch_size is None:  # chosen from the data (embedtune.training.schedule), within these rules
            return
        if self.batch_size < 2 and (loss is None or loss.in_batch):
            raise SettingError(
                "batch_size",
                f"loss '{self.loss}' compares the rows of a batch with each other and learns nothing from "
                "batches of 1; use a batch size of at least 2",
            )
        if loss is not None and loss.name == "cached-mnrl" and self.mini_batch_size > self.batch_size:
            raise SettingError("mini_batch_size", f"{self.mini_batch_size} is larger than batch_size {self.batch_size}")

    def dev_settings(self) -> DevSettings:
        """The settings the dev evaluation reads."""
        return DevSettings(
            self.data,
            self.dev_data,
            self.dev_split,
            self.dev_queries,
            self.dev_corpus,
            self.metric,
            self.seed,
            self.score_range,
            self.dev_holdout,
            self.split,
        )

    def loss_params(self, *, gather_across_devices: bool) -> LossParams:
        """The settings the losses read (the temperature as the schedule filled it in); ``gather_across_devices``:
        under DDP, the in-batch-negative losses take the other processes' texts as negatives too."""
        return LossParams(
            self.temperature,
            self.mini_batch_size,
            self.triplet_margin,
            self.matryoshka_dims,
            gather_across_devices=gather_across_devices,
        )

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> TrainConfig:
        """Read a YAML config; ``overrides`` (e.g. CLI options the user gave) win over the file."""
        path = Path(path)
        values = settings.read_yaml_mapping(path)
        if "output" not in values and "output" not in overrides:
            raise EmbedtuneError(f"{path}: no 'output' (give it in the file or as an override)")
        return settings.from_mapping(cls, values, str(path), **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str paths, lists), as written to YAML/JSON."""
        out = {}
        for key, value in asdict(self).items():
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]  # more_data: paths
            out[key] = value
        return out

    def identity(self) -> dict[str, Any]:
        """The fields that make two runs the same run (what ``resume`` must match)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_OPTIONS}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
