"""The similarity path end to end: CoSENT on STS-benchmark train, Spearman on STS-B dev before and after.

STS-B is not shipped with embedtune (users bring their own scored pairs); this reads the copy beside
the repository, converts it to the scored-pair jsonl that ``embedtune train`` reads, and trains
through the same library call as ``embedtune train --loss cosent --score-range 0 5``:

    python benchmarks/sts_cosent.py                       # ../shared/datasets/stsbenchmark
    python benchmarks/sts_cosent.py --sts-dir PATH --epochs 2 --losses cosent,angle,cosine

Dev Spearman (cosine) is sentence-transformers' EmbeddingSimilarityEvaluator on all 1,500 dev pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")


def convert(csv_path: Path, out: Path) -> int:
    """STS-B's tab-separated file (some rows carry extra trailing columns) to scored-pair jsonl."""
    rows = 0
    with csv_path.open(encoding="utf-8") as f, out.open("w", encoding="utf-8") as w:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < len(COLUMNS):
                continue
            row = dict(zip(COLUMNS, fields, strict=False))
            w.write(
                json.dumps({"sentence1": row["sentence1"], "sentence2": row["sentence2"], "score": float(row["score"])})
            )
            w.write("\n")
            rows += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sts-dir", type=Path, default=ROOT.parent / "shared" / "datasets" / "stsbenchmark")
    parser.add_argument("--losses", default="cosent", help="comma-separated scored-pair losses to compare")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    args = parser.parse_args()

    from embedtune.training import TrainConfig, train

    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        counts = {s: convert(args.sts_dir / f"sts-{s}.csv", scratch / f"{s}.jsonl") for s in ("train", "dev")}
        for loss in args.losses.split(","):
            config = TrainConfig(
                output=scratch / f"model-{loss}",
                data=scratch / "train.jsonl",
                dev_data=scratch / "dev.jsonl",
                score_range=(0.0, 5.0),
                loss=loss,
                epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=args.lr,
                max_seq_length=64,
            )
            started = time.perf_counter()
            result = train(config)
            key = result.metric
            runs.append(
                {
                    "loss": loss,
                    "dev_spearman_before": round(result.dev_before[key], 4),
                    "dev_spearman_after": round(result.dev_after[key], 4),
                    "dev_pearson_after": round(result.dev_after.get("eval_dev_pearson_cosine", float("nan")), 4),
                    "steps": result.steps,
                    "train_seconds": round(result.seconds, 1),
                    "wall_seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    summary = {
        "machine": machine(),
        "model": "all-MiniLM-L6-v2 (bundled)",
        "data": {"train_pairs": counts["train"], "dev_pairs": counts["dev"], "score_range": [0, 5]},
        "settings": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "max_seq_length": 64},
        "runs": runs,
    }
    lines = [
        "# STS-benchmark: scored-pair training",
        "",
        f"all-MiniLM-L6-v2 fine-tuned on STS-B train ({counts['train']:,} pairs, scores 0-5 rescaled to 0-1), "
        f"{args.epochs:g} epoch(s), batch {args.batch_size}, lr {args.lr:g}, 64 tokens; dev = all "
        f"{counts['dev']:,} STS-B dev pairs; {summary['machine']}.",
        "",
        "| loss | dev Spearman before | dev Spearman after | steps | train s |",
        "|---|---|---|---|---|",
        *(
            f"| {r['loss']} | {r['dev_spearman_before']:.4f} | {r['dev_spearman_after']:.4f} | {r['steps']} | "
            f"{r['train_seconds']:.0f} |"
            for r in runs
        ),
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sts_cosent.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "sts_cosent.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
