"""Quality ablation: fine-tune with no mined negatives, naive top-k negatives, positive-aware negatives.

All three fine-tunes start from the bundled all-MiniLM-L6-v2 on the Debian train split with the same
budget (same optimiser steps, batch size, learning rate, seed, 32-token texts, MNRL loss: in-batch
negatives, plus each row's mined negatives where there are any), and are scored on the test split
(2,816 queries against all 60,594 documents, exact search, 32 tokens: encoding the corpus at 64
tokens three times did not fit the time this shared 2-core machine had).

* ``pairs``: (query, positive) pairs only, the in-batch negatives of the other rows.
* ``naive``: the top ``NUM_NEGATIVES`` documents retrieved by the base model, skipping only the
  row's own positive — what a hand-written mining script does.
* ``aware``: ``embedtune.mining`` with its defaults: every known positive of the query and any copy
  of a positive's text excluded, candidates above 95 % of the positive's score dropped
  (NV-Retriever's TopK-PercPos), ranks 1..50.

Both mined sets come from the same retrieval (the base model at 32 tokens, bf16; the documents'
vectors are the ones ``mining_scale.py encode --real`` wrote, encoded again here if absent).

Steps (each holds the benchmark lock for well under 15 minutes):

    python benchmarks/mining_ablation.py encode
    python benchmarks/mining_ablation.py mine
    python benchmarks/mining_ablation.py train pairs|naive|aware
    python benchmarks/mining_ablation.py eval pairs|naive|aware
    python benchmarks/mining_ablation.py report
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache" / "mining_ablation"
SCALE_DOCS = ROOT / "benchmarks" / ".cache" / "mining_scale" / "docs-real.npy"
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = ("pairs", "naive", "aware")
NUM_NEGATIVES, MINE_SEQ_LENGTH, SEQ_LENGTH = 3, 32, 32
STEPS, BATCH, LR, SEED = 60, 32, 5e-5, 42


def _data():
    from embedtune.data import default_data_dir
    from embedtune.mining import load_mining_input

    return load_mining_input(default_data_dir(), "train")


def encode() -> None:
    from embedtune.encoding import Encoder
    from embedtune.models import load_model

    data = _data()
    encoder = Encoder(load_model("default", max_seq_length=MINE_SEQ_LENGTH))
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    np.save(CACHE / "queries.npy", encoder.encode(data.query_texts, batch_size=64))
    docs = np.load(SCALE_DOCS) if SCALE_DOCS.exists() else encoder.encode(data.doc_texts, batch_size=64)
    np.save(CACHE / "docs.npy", docs)
    print(f"encoded in {time.perf_counter() - started:.0f} s ({len(data.query_texts)} queries)")


def _naive(data, retriever) -> tuple:
    """Top NUM_NEGATIVES by rank, skipping only the row's own positive; and how many are false."""
    from embedtune.mining import MinedRows, normalise_text

    rows = np.arange(len(data.pair_query))
    scores, found = retriever.search(data.pair_query, NUM_NEGATIVES + 1)
    keep = found != data.pair_doc[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :NUM_NEGATIVES]
    negatives = np.take_along_axis(found, order, axis=1)
    neg_scores = np.take_along_axis(scores, order, axis=1)
    pos = retriever.pair_scores(data.pair_query, data.pair_doc)
    positives: dict[int, set[int]] = {}
    for q, d in zip(data.pair_query, data.pair_doc, strict=True):
        positives.setdefault(int(q), set()).add(int(d))
    norm = [normalise_text(t) for t in data.doc_texts]
    other_positive = sum(
        int(n) in positives[int(q)] for q, row in zip(data.pair_query, negatives, strict=True) for n in row
    )
    copies = sum(
        norm[int(n)] in {norm[p] for p in positives[int(q)]} and int(n) not in positives[int(q)]
        for q, row in zip(data.pair_query, negatives, strict=True)
        for n in row
    )
    too_close = int((neg_scores > (pos - 0.05 * np.abs(pos))[:, None]).sum())
    audit = {
        "negatives": int(negatives.size),
        "other_positive": other_positive,
        "positive_copy": copies,
        "above_95pct_of_positive": too_close,
    }
    return MinedRows(rows, negatives, np.concatenate([pos[:, None], neg_scores], axis=1)), audit


def mine_both() -> None:
    from embedtune.mining import MiningConfig, mine, plot_histograms, report_paths, write_mined
    from embedtune.retrieval import DenseRetriever

    data = _data()
    retriever = DenseRetriever(np.load(CACHE / "docs.npy"), np.load(CACHE / "queries.npy"), "dense:default@32")
    started = time.perf_counter()
    naive, audit = _naive(data, retriever)
    write_mined(CACHE / "naive.jsonl.gz", data, naive)
    naive_seconds = time.perf_counter() - started
    mined, report = mine(data, retriever, MiningConfig(num_negatives=NUM_NEGATIVES), show_progress=False)
    write_mined(CACHE / "aware.jsonl.gz", data, mined)
    json_path, png_path = report_paths(RESULTS / "mining_ablation_aware.jsonl")
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    plot_histograms(report, png_path)
    (CACHE / "mining.json").write_text(
        json.dumps({"naive_audit": audit, "naive_seconds": naive_seconds, "aware": report.to_dict()}, indent=2)
    )
    print(json.dumps(audit), "\n" + report.summary())


def train_variant(variant: str) -> None:
    from embedtune.data import default_data_dir
    from embedtune.training import TrainConfig, train

    data = default_data_dir() if variant == "pairs" else CACHE / f"{variant}.jsonl.gz"
    config = TrainConfig(
        output=CACHE / "models" / variant,
        data=data,
        loss="mnrl",
        max_steps=STEPS,
        batch_size=BATCH,
        learning_rate=LR,
        max_seq_length=SEQ_LENGTH,
        dev=False,
        seed=SEED,
        overwrite=True,
    )
    result = train(config)
    (CACHE / f"train-{variant}.json").write_text(
        json.dumps({"steps": result.steps, "rows": result.rows, "seconds": result.seconds}, indent=2)
    )
    print(f"{variant}: {result.steps} steps on {result.rows} rows in {result.seconds:.0f} s")


def eval_variant(variant: str) -> None:
    from embedtune.data import default_data_dir, load_split
    from embedtune.encoding import EncodeSettings
    from embedtune.evaluate import EvalSettings, evaluate_model

    split = load_split(default_data_dir(), "test")
    settings = EvalSettings(show_progress=False)  # recall and mrr @1/10/100, ndcg@10
    result = evaluate_model(CACHE / "models" / variant, split, settings, EncodeSettings(max_seq_length=SEQ_LENGTH))
    (CACHE / f"eval-{variant}.json").write_text(json.dumps(result.to_dict(), indent=2))
    print(variant, {k: round(v, 4) for k, v in result.metrics.items()})


def report() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mining = json.loads((CACHE / "mining.json").read_text())
    rows = {}
    for v in (v for v in VARIANTS if (CACHE / f"eval-{v}.json").exists()):  # report what has been run
        rows[v] = {
            "eval": json.loads((CACHE / f"eval-{v}.json").read_text()),
            "train": json.loads((CACHE / f"train-{v}.json").read_text()),
        }
    payload = {
        "machine": "2 vCPUs of an Intel Sapphire Rapids (AVX-512, AMX), 24 GiB RAM, shared; no GPU",
        "budget": {
            "steps": STEPS,
            "batch_size": BATCH,
            "learning_rate": LR,
            "max_seq_length": SEQ_LENGTH,
            "seed": SEED,
            "loss": "mnrl",
            "num_negatives": NUM_NEGATIVES,
        },
        "mining_retriever": f"all-MiniLM-L6-v2 (base), {MINE_SEQ_LENGTH} tokens, bf16 search + fp32 rescoring",
        "naive_audit": mining["naive_audit"],
        "aware_report": {
            k: mining["aware"][k]
            for k in ("candidates_seen", "filtered", "rows_written", "rows_short", "pairs", "window")
        },
        "variants": rows,
    }
    (RESULTS / "mining_ablation.json").write_text(json.dumps(payload, indent=2) + "\n")
    metrics = ("ndcg@10", "recall@10", "mrr@10")
    lines = [
        f"# Fine-tuning with and without mined negatives ({STEPS} steps x {BATCH}, {SEQ_LENGTH} tokens, test split)",
        "",
        "| variant | training rows | " + " | ".join(metrics) + " | recall@100 | train s |",
        "|---|---|" + "---|" * (len(metrics) + 2),
    ]
    for v, r in rows.items():
        m = r["eval"]["metrics"]
        lines.append(
            f"| {v} | {r['train']['rows']} | "
            + " | ".join(f"{m[k]:.4f}" for k in metrics)
            + f" | {m['recall@100']:.4f} | {r['train']['seconds']:.0f} |"
        )
    a = mining["naive_audit"]
    lines += [
        "",
        f"Naive negatives: {a['negatives']:,}, of which {a['other_positive']:,} are another positive of the query, "
        f"{a['positive_copy']:,} copy a positive's text, and {a['above_95pct_of_positive']:,} score above 95 % of "
        "the positive.",
        "",
    ]
    (RESULTS / "mining_ablation.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    width = 0.25
    for i, v in enumerate(rows):
        vals = [rows[v]["eval"]["metrics"][k] for k in metrics]
        ax.bar(np.arange(len(metrics)) + (i - 1) * width, vals, width, label=v)
    ax.set_xticks(np.arange(len(metrics)), metrics)
    lo = min(rows[v]["eval"]["metrics"][k] for v in rows for k in metrics)
    ax.set_ylim(max(0, lo - 0.1), None)
    ax.legend()
    ax.set_title("Debian test split after fine-tuning (same budget)")
    fig.tight_layout()
    fig.savefig(RESULTS / "mining_ablation.png")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("encode")
    sub.add_parser("mine")
    for name in ("train", "eval"):
        sub.add_parser(name).add_argument("variant", choices=VARIANTS)
    sub.add_parser("report")
    args = parser.parse_args()
    if args.step == "encode":
        encode()
    elif args.step == "mine":
        mine_both()
    elif args.step == "train":
        train_variant(args.variant)
    elif args.step == "eval":
        eval_variant(args.variant)
    else:
        report()


if __name__ == "__main__":
    main()
