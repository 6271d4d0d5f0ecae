"""What a training run leaves beside the model: a model card, ``metrics.jsonl`` and a PNG of the curves.

The card is written from the run record rather than sentence-transformers' generic template so
that it states what a reader needs to trust the model: the exact base model and data (with hashes),
the loss actually used (never ``auto``) and every hyper-parameter, and the dev metrics before and
after training. A "Choices" table says what the run resolved for the user (the training and the
inference token limits, the dev set, the loss) and why, and the card says so when the model scores
below its base model on dev.

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
from pathlib import Path
from typing import Any

from embedtune.models import card_metadata, hub_model_id
from embedtune.training.config import metric_label

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


def card_facts(base_path: Path, license: str | None, datasets: Sequence[str] | None) -> dict[str, Any]:
    """What the card says about where the model comes from, for the run record.

    ``license`` wins over the base model's; without it the base card's ``license`` is inherited.
    """
    base_card = card_metadata(base_path)
    hub_id = hub_model_id(base_path)
    return {
        "base_model": hub_id,
        "base_model_name": hub_id or Path(base_path).name,
        "license": license or base_card.get("license"),
        "language": base_card.get("language"),
        "datasets": list(datasets or ()),
    }


def write_run_report(
    folder: Path, record: dict[str, Any], history: list[dict], before: dict[str, float], *, name: str
) -> None:
    """Write README.md, metrics.jsonl and training.png into ``folder``; ``name`` is the model's final
    folder name (``folder`` may be the temporary directory it is written in)."""
    rows = ([{"step": 0, **before}] if before else []) + history
    (folder / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    plotted = _plot(folder / PLOT, rows, record.get("dev_metric"))
    (folder / CARD).write_text(_front_matter(name, record) + _card(name, record, plotted), encoding="utf-8")


def _front_matter(name: str, record: dict[str, Any]) -> str:
    from huggingface_hub import ModelCardData

    facts = record.get("card") or {}
    data = ModelCardData(
        model_name=name,
        base_model=facts.get("base_model"),
        license=facts.get("license"),
        language=facts.get("language"),
        datasets=facts.get("datasets") or None,
        pipeline_tag="sentence-similarity",
        library_name="sentence-transformers",
        tags=[*TAGS, f"loss:{record['loss']}"],
        eval_results=_eval_results(record) or None,
    )
    return f"---\n{data.to_yaml()}\n---\n\n"


def _eval_results(record: dict[str, Any]) -> list:
    """The kept checkpoint's dev metrics as Hub eval results (the ``model-index``)."""
    from huggingface_hub import EvalResult

    config, named = record["config"], (record.get("card") or {}).get("datasets") or []
    dev_data = config.get("dev_data")
    dataset = Path(dev_data or config["data"]).name.split(".")[0]
    split = "dev" if dev_data else config.get("dev_split", "dev")
    if record.get("dev_held_out_queries"):
        split = f"{config.get('split', 'train')} (held-out queries)"
    elif split == "auto":
        split = "dev"
    dataset_type = named[0] if named and not dev_data else dataset  # the Hub id when the dev set is its split
    results = []
    for key, value in (record.get("dev_after") or {}).items():
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


def _card(name: str, record: dict[str, Any], plotted: bool) -> str:
    # Long because it is the card's template: one section after another, in the order they appear.
    choices = record.get("choices") or {}
    # The values used, not "auto" or None: the resolved loss and token limits.
    config = {**record["config"], **{k: c["value"] for k, c in choices.items() if k in _CARD_FIELDS}}
    config["loss"] = record["loss"]
    base = (record.get("card") or {}).get("base_model_name") or Path(record["base_model_path"]).name
    lines = [
        f"# {name}",
        "",
        f"A sentence embedder trained with embedtune {record['embedtune_version']} from `{base}` "
        f"(sha256 `{record['base_model_fingerprint'][:16]}`) on {record['data']}.",
        "",
        "## Data",
        "",
        "| file | sha256 |",
        "|---|---|",
        *(
            f"| `{_relative(path, record['config']['data'])}` | `{digest}` |"
            for path, digest in record["data_files"].items()
        ),
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {key} | {_fmt(config.get(key))} |" for key in _CARD_FIELDS),
        f"| precision | {record['precision']} on {record['device']} |",
        *_processes(record, config.get("batch_size")),
        f"| steps | {record['steps']} ({record['rows']:,} rows, {record['train_seconds']} s) |",
        "",
        *_choices(choices),
    ]
    before, after = record.get("dev_before") or {}, record.get("dev_after") or {}
    if after:
        metric = record["dev_metric"]
        lines += [
            "## Dev metrics",
            "",
            f"Kept checkpoint: step {record['best_step']}, chosen by dev {metric_label(metric)}.",
            "",
            *(
                [f"**Below the base model on dev {metric_label(metric)}**: the base model is better on this data.", ""]
                if record.get("worse_than_base")
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


def _processes(record: dict[str, Any], batch: int | None) -> list[str]:
    """The data-parallel row: N processes x batch B, and whether that trains like one batch of N*B."""
    n = record.get("processes", 1)
    if n <= 1 or batch is None:
        return []
    row = f"| processes | {n} (data-parallel): {n} x batch {batch} = {n * batch} rows a step"
    if record.get("negatives_across_processes"):
        row += f"; in-batch negatives gathered across processes, so it trains like one batch of {n * batch}"
    return [row + " |"]


def _choices(choices: dict[str, dict[str, Any]]) -> list[str]:
    """The "Choices" section: each resolved setting, where it came from and why."""
    if not choices:
        return []
    rows = [
        f"| {name} | {_fmt(c['value'])} | {c['source']} | {c['why'].replace('|', '/')} |" for name, c in choices.items()
    ]
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
