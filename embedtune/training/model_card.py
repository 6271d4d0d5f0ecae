"""What a training run leaves beside the model: its record, a model card, ``metrics.jsonl`` and a PNG of the curves.

The record (``embedtune_train.json``) is a :class:`RunRecord`: what the run was (config, base
model and data with hashes, loss, sampling, processes, precision), every choice of its plan with
the reason, and what came of it (steps, losses, timings, dev metrics before and after). It is typed
so that the card, the tests and any program reading a model folder read named fields rather than
string keys, and it carries a schema (``embedtune.train_record/2``; the records written before the
schema key are version 1, with the same keys), so that a reader can tell what it holds.

The card is written from the record rather than sentence-transformers' generic template so
that it states what a reader needs to trust the model: the exact base model and data (with hashes),
the loss actually used (never ``auto``) and every hyper-parameter, and the dev metrics before and
after training. A "Choices" table says what the run resolved for the user (the training and the
inference token limits, the dev set, the loss, the schedule) and why, and the card says so when the
model scores below its base model on dev.

It is ready for the Hugging Face Hub as it stands: the front matter (written by
``huggingface_hub.ModelCardData``, so the Hub and ``ModelCard.load`` parse it) names the base model
by its Hub id, the license and language inherited from the base model's card, the datasets, the
pipeline and library, and a ``model-index`` of the dev results. The card names things relatively: the
model by its final folder name (never the temporary folder it is written in), the base model by Hub
id or folder name and the data files by name and SHA-256, never by paths of the machine that trained it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from embedtune.errors import EmbedtuneError
from embedtune.models import card_metadata, hub_model_id
from embedtune.training.choices import Choice
from embedtune.training.config import metric_label

TRAIN_RECORD = "embedtune_train.json"
RECORD_SCHEMA = "embedtune.train_record/2"
_READABLE = ("embedtune.train_record/1", RECORD_SCHEMA)  # /1: written before the schema key, the same keys
CARD = "README.md"
METRICS = "metrics.jsonl"
PLOT = "training.png"
# Hyper-parameters worth a row in the card, in reading order.
_CARD_FIELDS = (
    "loss",
    "temperature",
    "matryoshka_dims",
    "epochs",
    "max_steps",
    "batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "max_seq_length",
    "inference_max_seq_length",
    "pooling",
    "normalize",
    "query_prompt",
    "document_prompt",
    "freeze_embeddings",
    "freeze_layers",
    "seed",
)


TAGS = ("sentence-transformers", "sentence-similarity", "feature-extraction", "embedtune")


@dataclass(frozen=True)
class CardFacts:
    """Where the model comes from, as the card's front matter says it: the base model's Hub id (None: a
    local folder) and its name, the license and language, the Hub ids of the datasets."""

    base_model: str | None
    base_model_name: str
    license: str | None
    language: Any  # as the base model's card gives it: a code or a list of them
    datasets: list[str]


def card_facts(base_path: Path, license: str | None, datasets: Sequence[str] | None) -> CardFacts:
    """What the card says about where the model comes from, for the run record.

    ``license`` wins over the base model's; without it the base card's ``license`` is inherited.
    """
    base_card = card_metadata(base_path)
    hub_id = hub_model_id(base_path)
    return CardFacts(
        base_model=hub_id,
        base_model_name=hub_id or Path(base_path).name,
        license=license or base_card.get("license"),
        language=base_card.get("language"),
        datasets=list(datasets or ()),
    )


@dataclass(frozen=True)
class RunRecord:
    """``embedtune_train.json``: what the run was, what it chose and why, and what came of it.

    ``config`` is :meth:`TrainConfig.identity` with the schedule filled in; ``choices`` every choice
    of the run's plan, the checkpoint interval as used (spaced further apart when evaluations cost
    more than planned); ``rows`` the training rows; ``dev_metric`` the trainer's key of the metric
    that picked ``best_step``; ``dev_curve`` that metric at each evaluation with the seconds since
    the run started; ``timings`` wall seconds per stage up to writing the output; ``losses``
    (step, mean training loss since the previous log).
    """

    embedtune_version: str
    config: dict[str, Any]
    base_model_path: str
    base_model_fingerprint: str
    data_files: dict[str, str]  # path -> SHA-256
    data: str  # the datasets, described
    loss: str  # the first dataset's, resolved (never "auto")
    loss_module: str
    batch_sampler: str
    sampling: dict[str, Any]  # datasets, their losses, weights and the mix
    processes: int  # data-parallel: each step sees processes x batch_size rows
    negatives_across_processes: bool
    precision: str
    device: str
    rows: int
    steps: int
    dev_metric: str | None
    choices: dict[str, Choice]
    dev_held_out_queries: list[str]
    best_step: int | None
    python: str
    card: CardFacts
    resumed_from: str | None
    train_seconds: float
    timings: dict[str, float]
    dev_evaluations: int
    dev_curve: list[dict[str, float]]
    dev_before: dict[str, float]
    dev_after: dict[str, float]
    worse_than_base: bool
    losses: list[tuple[int, float]]

    def to_json(self) -> str:
        return json.dumps({"schema": RECORD_SCHEMA, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = TRAIN_RECORD) -> RunRecord:
        """The record in ``text`` (``source`` names it in errors), of this schema or the one before it."""
        raw = json.loads(text)
        schema = raw.get("schema", _READABLE[0])
        missing = [f.name for f in fields(cls) if f.name not in raw]
        if schema not in _READABLE or missing:
            why = f"schema {schema!r}" if schema not in _READABLE else f"no {', '.join(missing)}"
            raise EmbedtuneError(f"{source}: not a training record this embedtune reads ({why})")
        values = {f.name: raw[f.name] for f in fields(cls)}
        values["choices"] = {name: Choice(**choice) for name, choice in values["choices"].items()}
        values["card"] = CardFacts(**values["card"])
        values["losses"] = [(int(step), float(loss)) for step, loss in values["losses"]]
        return cls(**values)

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        """The record of the model in ``folder``."""
        path = Path(folder) / TRAIN_RECORD
        return cls.from_json(path.read_text(encoding="utf-8"), str(path))


def write_run_report(folder: Path, record: RunRecord, history: list[dict], *, name: str) -> None:
    """Write embedtune_train.json, README.md, metrics.jsonl and training.png into ``folder``; ``name`` is the
    model's final folder name (``folder`` may be the temporary directory it is written in)."""
    (folder / TRAIN_RECORD).write_text(record.to_json(), encoding="utf-8")
    rows = ([{"step": 0, **record.dev_before}] if record.dev_before else []) + history
    (folder / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    plotted = _plot(folder / PLOT, rows, record.dev_metric)
    (folder / CARD).write_text(_front_matter(name, record) + _card(name, record, plotted), encoding="utf-8")


def _front_matter(name: str, record: RunRecord) -> str:
    from huggingface_hub import ModelCardData

    facts = record.card
    data = ModelCardData(
        model_name=name,
        base_model=facts.base_model,
        license=facts.license,
        language=facts.language,
        datasets=facts.datasets or None,
        pipeline_tag="sentence-similarity",
        library_name="sentence-transformers",
        tags=[*TAGS, f"loss:{record.loss}"],
        eval_results=_eval_results(record) or None,
    )
    return f"---\n{data.to_yaml()}\n---\n\n"


def _eval_results(record: RunRecord) -> list:
    """The kept checkpoint's dev metrics as Hub eval results (the ``model-index``)."""
    from huggingface_hub import EvalResult

    config, named = record.config, record.card.datasets
    dev_data = config.get("dev_data")
    dataset = Path(dev_data or config["data"]).name.split(".")[0]
    split = "dev" if dev_data else config.get("dev_split", "dev")
    if record.dev_held_out_queries:
        split = f"{config.get('split', 'train')} (held-out queries)"
    elif split == "auto":
        split = "dev"
    dataset_type = named[0] if named and not dev_data else dataset  # the Hub id when the dev set is its split
    results = []
    for key, value in record.dev_after.items():
        if not key.startswith("eval_dev_"):
            continue
        label = metric_label(key)
        results.append(
            EvalResult(
                task_type="semantic-similarity" if label in ("spearman", "pearson") else "information-retrieval",
                dataset_type=dataset_type,
                dataset_name=dataset,
                dataset_split=split,
                metric_type=label,
                metric_value=float(value),
                metric_name=f"dev {label}",
            )
        )
    return results


def _relative(path: str, data: str) -> str:
    """A data file named relative to the data folder it came from (``debian/qrels/train.tsv``)."""
    root = Path(data)
    try:
        return (Path(root.name) / Path(path).relative_to(root)).as_posix() if root.is_dir() else Path(path).name
    except ValueError:
        return Path(path).name


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else f"`{value}`" if isinstance(value, str) else str(value)


def _card(name: str, record: RunRecord, plotted: bool) -> str:
    # Long because it is the card's template: one section after another, in the order they appear.
    # The values used, not "auto" or None: the resolved loss and token limits.
    config = {**record.config, **{k: c.value for k, c in record.choices.items() if k in _CARD_FIELDS}}
    config["loss"] = record.loss
    lines = [
        f"# {name}",
        "",
        f"A sentence embedder trained with embedtune {record.embedtune_version} from `{record.card.base_model_name}` "
        f"(sha256 `{record.base_model_fingerprint[:16]}`) on {record.data}.",
        "",
        "## Data",
        "",
        "| file | sha256 |",
        "|---|---|",
        *(f"| `{_relative(path, record.config['data'])}` | `{digest}` |" for path, digest in record.data_files.items()),
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {key} | {_fmt(config.get(key))} |" for key in _CARD_FIELDS),
        f"| precision | {record.precision} on {record.device} |",
        *_processes(record, config.get("batch_size")),
        f"| steps | {record.steps} ({record.rows:,} rows, {record.train_seconds} s) |",
        "",
        *_choices(record.choices),
    ]
    before, after = record.dev_before, record.dev_after
    if after:
        metric = record.dev_metric or ""
        lines += [
            "## Dev metrics",
            "",
            f"Kept checkpoint: step {record.best_step}, chosen by dev {metric_label(metric)}.",
            "",
            *(
                [f"**Below the base model on dev {metric_label(metric)}**: the base model is better on this data.", ""]
                if record.worse_than_base
                else []
            ),
            "| metric | before | after |",
            "|---|---|---|",
            *(
                f"| {metric_label(key)} | {_fmt(before.get(key))} | {_fmt(value)} |"
                for key, value in after.items()
                if key.startswith("eval_dev_")
            ),
            "",
        ]
    if plotted:
        lines += ["## Curves", "", f"![training loss and dev metric]({PLOT})", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{name}")',
        "```",
        "",
        "Or with embedtune: `embedtune index build --model <this folder>` then `embedtune search`.",
        "",
    ]
    return "\n".join(lines)


def _processes(record: RunRecord, batch: int | None) -> list[str]:
    """The data-parallel row: N processes x batch B, and whether that trains like one batch of N*B."""
    n = record.processes
    if n <= 1 or batch is None:
        return []
    row = f"| processes | {n} (data-parallel): {n} x batch {batch} = {n * batch} rows a step"
    if record.negatives_across_processes:
        row += f"; in-batch negatives gathered across processes, so it trains like one batch of {n * batch}"
    return [row + " |"]


def _choices(choices: dict[str, Choice]) -> list[str]:
    """The "Choices" section: each resolved setting, where it came from and why."""
    if not choices:
        return []
    rows = [f"| {name} | {_fmt(c.value)} | {c.source} | {c.why.replace('|', '/')} |" for name, c in choices.items()]
    return [
        "## Choices",
        "",
        "What the run chose, and why.",
        "",
        "| setting | value | from | why |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


def _plot(path: Path, rows: list[dict], metric: str | None) -> bool:
    """Loss over steps and, when there is a dev set, the chosen dev metric over steps."""
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r[metric]) for r in rows if metric and metric in r]
    if not losses:
        return False
    from embedtune.plots import figure, save_png

    panels = 2 if evals else 1
    with figure(1, panels, figsize=(5 * panels, 3.5), squeeze=False) as (fig, axes):
        axes[0][0].plot(*zip(*losses, strict=True), marker=".")
        axes[0][0].set(title="training loss", xlabel="step", ylabel="loss")
        if evals:
            axes[0][1].plot(*zip(*evals, strict=True), marker="o", color="tab:green")
            axes[0][1].set(title=f"dev {metric_label(metric)}", xlabel="step")
        for ax in axes[0]:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        save_png(fig, path, dpi=100)
    return True
