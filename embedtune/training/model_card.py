"""What a training run leaves beside the model: a model card, ``metrics.jsonl`` and a PNG of the curves.

The card is written from the run record rather than sentence-transformers' generic template so
that it states what a reader needs to trust the model: the exact base model and data (with hashes),
the loss and every hyper-parameter, and the dev metrics before and after training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    "pooling",
    "normalize",
    "query_prompt",
    "document_prompt",
    "freeze_embeddings",
    "freeze_layers",
    "seed",
)


def write_run_report(folder: Path, record: dict[str, Any], history: list[dict], before: dict[str, float]) -> None:
    """Write README.md, metrics.jsonl and training.png into ``folder`` (the model directory)."""
    rows = ([{"step": 0, **before}] if before else []) + history
    (folder / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    plotted = _plot(folder / PLOT, rows, record.get("dev_metric"))
    (folder / CARD).write_text(_card(folder.name, record, plotted), encoding="utf-8")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else f"`{value}`" if isinstance(value, str) else str(value)


def _card(name: str, record: dict[str, Any], plotted: bool) -> str:
    config = record["config"]
    lines = [
        "---",
        "library_name: sentence-transformers",
        "tags: [sentence-transformers, sentence-similarity, embedtune]",
        "---",
        "",
        "# Fine-tuned sentence embedder",
        "",
        f"Trained with embedtune {record['embedtune_version']} from `{record['base_model_path']}` "
        f"(sha256 `{record['base_model_fingerprint'][:16]}`) on {record['data']}.",
        "",
        "## Data",
        "",
        "| file | sha256 |",
        "|---|---|",
        *(f"| `{path}` | `{digest[:16]}` |" for path, digest in record["data_files"].items()),
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {key} | {_fmt(config.get(key))} |" for key in _CARD_FIELDS),
        f"| precision | {record['precision']} on {record['device']} |",
        f"| steps | {record['steps']} ({record['rows']:,} rows, {record['train_seconds']} s) |",
        "",
    ]
    before, after = record.get("dev_before") or {}, record.get("dev_after") or {}
    if after:
        metric = record["dev_metric"]
        lines += [
            "## Dev metrics",
            "",
            f"Kept checkpoint: step {record['best_step']}, chosen by dev {metric_label(metric)}.",
            "",
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
