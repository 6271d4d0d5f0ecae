"""Retrieval-quality benchmark: what fine-tuning buys over BM25 and the base model, and what it costs.

Rows (systems):

* ``bm25`` — the lexical baseline (:mod:`embedtune.retrieval.bm25`);
* ``base`` — the bundled all-MiniLM-L6-v2, exact search;
* ``finetuned`` — ``embedtune train`` with its defaults (in-batch negatives) on data/debian train;
* ``mined`` — ``embedtune train --mine`` (hard negatives mined by issue 4's miner); skipped, with a
  message, while this checkout's ``embedtune train`` has no ``--mine``.

Each row is scored on the default dataset's test split (``data/debian``, 2,816 queries over 60,594
documents) and on the zero-shot split ``data/stsb-retrieval`` (never trained on; own ids ignored),
with nDCG@10, recall@10, recall@100 and MRR@10, plus the time to train. Results go to
``benchmarks/results/retrieval-quality.{json,md,png}``.

Run from the repository root (one command; about 30 min of evaluation plus the training runs)::

    .venv/bin/python benchmarks/retrieval_quality.py --lock /tmp/embedtune-bench.lock

Every stage (one training run, or one system's evaluation on both splits) holds ``--lock`` (an flock
file) only while it runs, so benchmarks of several people on one machine never overlap.
``--systems`` reruns some rows and keeps the others from the existing JSON; ``--max-steps`` cuts
training short (the results then say so and are labelled partial).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import cpu_model  # noqa: E402

from embedtune.data import load_split  # noqa: E402
from embedtune.encoding import EncodeSettings  # noqa: E402
from embedtune.evaluate import EvalResult, EvalSettings, evaluate_bm25, evaluate_model, plot_results  # noqa: E402
from embedtune.io import write_bytes_atomic, write_text_atomic  # noqa: E402

SYSTEMS = ("bm25", "base", "finetuned", "mined")
LABELS = {
    "bm25": "BM25",
    "base": "base all-MiniLM-L6-v2",
    "finetuned": "fine-tuned (train defaults)",
    "mined": "fine-tuned + mined hard negatives",
}
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
SPLITS = (  # (key, dataset folder, qrels split, ignore own ids, title)
    ("debian", ROOT / "data" / "debian", "test", False, "Debian test (in-domain)"),
    ("stsb", ROOT / "data" / "stsb-retrieval", "test", True, "STS-B retrieval (zero-shot)"),
)
TRAIN_ARGS = {"finetuned": ["train"], "mined": ["train", "--mine"]}
RESULTS = ROOT / "benchmarks" / "results" / "retrieval-quality"


@contextlib.contextmanager
def held(lock: Path | None, what: str) -> Iterator[None]:
    """Hold an exclusive flock on ``lock`` (if given) for one timed stage."""
    if lock is None:
        yield
        return
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[{what}] waiting for {lock} ...", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def embedtune_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "embedtune.cli", *args]


def train_row(system: str, model_dir: Path, args: argparse.Namespace) -> dict:
    """Train one row's model with the CLI (so its defaults are the user's); return the timing record.

    With ``--reuse-models`` a model already trained with the same ``--max-steps`` is kept.
    """
    record_path = model_dir / "embedtune_train.json"
    if args.reuse_models and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record["config"]["max_steps"] == args.max_steps:
            print(f"[{system}] reusing {model_dir}", flush=True)
            return train_summary(record, args.max_steps, wall=None, command="(reused) " + str(model_dir))
    if system == "mined":
        usage = subprocess.run(embedtune_cli("train", "--help"), capture_output=True, text=True, check=True).stdout
        if "--mine" not in usage:
            raise SkipRow("this checkout's `embedtune train` has no --mine option (hard-negative mining is issue 4)")
    command = embedtune_cli(*TRAIN_ARGS[system], "--output", str(model_dir), "--overwrite")
    if args.max_steps is not None:
        command += ["--max-steps", str(args.max_steps)]
    with held(args.lock, f"{system}: train"):
        print(f"[{system}] {' '.join(command[2:])}", flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT)
        wall = time.perf_counter() - started
    record = json.loads(record_path.read_text())
    return train_summary(record, args.max_steps, wall, "embedtune " + " ".join(command[3:]))


def train_summary(record: dict, max_steps: int | None, wall: float | None, command: str) -> dict:
    return {
        "command": command,
        "max_steps": max_steps,
        "steps": record["steps"],
        "rows": record["rows"],
        "train_seconds": record["train_seconds"],
        "wall_seconds": None if wall is None else round(wall, 1),
        "precision": record["precision"],
    }


class SkipRow(Exception):
    """A row that cannot run in this checkout; its message says why."""


def evaluate_row(system: str, model: str | None, args: argparse.Namespace) -> dict[str, dict]:
    """Score one system on every split, in one hold of the lock (a few minutes per model)."""
    splits = [(key, load_split(root, split), ignore) for key, root, split, ignore, _title in SPLITS]
    results = {}
    with held(args.lock, f"{system}: evaluate"):
        for key, split, ignore_own_id in splits:
            settings = EvalSettings(metrics=METRICS, ignore_own_id=ignore_own_id, show_progress=not args.quiet)
            print(f"[{system}] evaluating on {split.name}", flush=True)
            if system == "bm25":
                result = evaluate_bm25(split, settings)
            else:
                result = evaluate_model(model, split, settings, EncodeSettings(max_seq_length=args.max_seq_length))
            scores = ", ".join(f"{m} {v:.4f}" for m, v in result.metrics.items())
            print(f"[{system}] {split.name}: {scores} ({result.seconds:.0f} s)", flush=True)
            results[key] = result.to_dict()
    return results


def run_row(system: str, args: argparse.Namespace) -> dict:
    row: dict = {"system": system, "label": LABELS[system], "run_command": " ".join([".venv/bin/python", *sys.argv])}
    try:
        model: str | None = None
        if system == "base":
            model = "default"
        elif system in TRAIN_ARGS:
            model_dir = args.models_dir / system
            row["train"] = train_row(system, model_dir, args)
            model = str(model_dir)
        row["results"] = evaluate_row(system, model, args)
        row["status"] = "done"
    except SkipRow as e:
        print(f"[{system}] skipped: {e}", flush=True)
        row.update(status="skipped", note=str(e))
    return row


def machine() -> dict:
    import faiss
    import sentence_transformers
    import torch
    import transformers

    return {
        "cpu": cpu_model(platform.processor()),
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "faiss": faiss.__version__,
    }


def render_markdown(report: dict) -> str:
    lines = [
        "# Retrieval quality: BM25, base model, fine-tuned",
        "",
        "Commands: " + ", ".join(f"`{c}`" for c in dict.fromkeys(r["run_command"] for r in report["rows"])) + "  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpus']} CPUs; torch {report['machine']['torch']}, "
        f"sentence-transformers {report['machine']['sentence_transformers']}  ",
        f"Texts cut at {report['max_seq_length']} tokens for every model; metrics by pytrec_eval; "
        "STS-B with own ids ignored.",
        "",
    ]
    if report["partial"]:
        lines += [f"**Partial run:** {report['partial']}", ""]
    for key, _root, _split, _ignore, title in SPLITS:
        some = next(r["results"][key] for r in report["rows"] if r.get("results"))
        lines += [
            f"## {title}: `{some['split']}`, {some['n_queries']} queries, {some['n_documents']} documents",
            "",
            "| system | " + " | ".join(METRICS) + " | train steps | train s | eval s |",
            "|---|" + "---|" * (len(METRICS) + 3),
        ]
        for row in report["rows"]:
            train = row.get("train", {})
            steps, seconds = str(train.get("steps", "-")), f"{train['train_seconds']:.0f}" if train else "-"
            if row["status"] != "done":
                cells = ["skipped"] + [""] * (len(METRICS) - 1) + [steps, seconds, ""]
            else:
                result = row["results"][key]
                cells = [f"{result['metrics'][m]:.4f}" for m in METRICS] + [steps, seconds, f"{result['seconds']:.0f}"]
            lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
        lines.append("")
    for row in report["rows"]:
        if row["status"] == "skipped":
            lines.append(f"- {row['label']}: skipped ({row['note']}).")
        elif "train" in row:
            t = row["train"]
            lines.append(
                f"- {row['label']}: `{t['command']}`: {t['steps']} steps over {t['rows']} training rows "
                f"in {t['train_seconds']:.0f} s ({t['precision']})."
            )
    return "\n".join(lines) + "\n"


def render_chart(report: dict) -> bytes:
    titled = {key: title for key, *_rest, title in SPLITS}
    results = [
        EvalResult(
            system=row["label"],
            kind=r["kind"],
            split=titled[key],
            n_queries=r["n_queries"],
            n_documents=r["n_documents"],
            metrics=r["metrics"],
            seconds=r["seconds"],
        )
        for key, *_rest in SPLITS
        for row in report["rows"]
        if row["status"] == "done"
        for r in [row["results"][key]]
    ]
    suffix = " (partial run)" if report["partial"] else ""
    return plot_results(results, title=f"Retrieval quality{suffix}")


def partial_note(rows: list[dict]) -> str:
    """Why these results are not the full benchmark ('' when they are)."""
    notes = [f"{r['label']} skipped" for r in rows if r["status"] == "skipped"]
    notes += [
        f"{r['label']} stopped at --max-steps {r['train']['max_steps']} instead of the default epochs"
        for r in rows
        if r.get("train", {}).get("max_steps") is not None
    ]
    notes += [f"{LABELS[s]} not run" for s in SYSTEMS if s not in {r["system"] for r in rows}]
    return "; ".join(notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"rows to (re)run, of {', '.join(SYSTEMS)}")
    parser.add_argument("--lock", type=Path, default=None, help="flock file held during every timed stage")
    parser.add_argument("--max-steps", type=int, default=None, help="cut training short (a partial run)")
    parser.add_argument("--max-seq-length", type=int, default=128, help="tokens per text for every model")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models" / "benchmark")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results path without suffix")
    parser.add_argument(
        "--reuse-models", action="store_true", help="keep a model already trained with the same --max-steps"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := sorted(set(systems) - set(SYSTEMS)):
        parser.error(f"unknown system(s) {', '.join(unknown)}")

    json_path = args.out.with_suffix(".json")
    previous = json.loads(json_path.read_text()) if json_path.is_file() else {"rows": []}
    kept = {r["system"]: r for r in previous["rows"]}
    for system in systems:
        kept[system] = run_row(system, args)
        rows = [kept[s] for s in SYSTEMS if s in kept]
        report = {
            "benchmark": "retrieval_quality",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "metrics": list(METRICS),
            "max_seq_length": args.max_seq_length,
            "partial": partial_note(rows),
            "rows": rows,
        }
        if any(r["status"] == "done" for r in rows):
            write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
            write_text_atomic(args.out.with_suffix(".md"), render_markdown(report))
            write_bytes_atomic(args.out.with_suffix(".png"), render_chart(report))
    print(f"results in {args.out}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
