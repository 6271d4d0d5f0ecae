"""Defaults that win: ``embedtune train`` with its defaults against a plain sentence-transformers script.

Both train all-MiniLM-L6-v2 on the same pairs (data/debian train) within the same wall-clock budget
and are scored on the test split (2,816 queries against all 60,594 documents) by the same evaluator.

* The peer is benchmarks/st_plain.py: MNRL, batch 32, lr 2e-5, NO_DUPLICATES sampler, fp32, the
  model's own 256-token limit, no dev evaluation. Its budget counts training only: it trains for
  ``budget x its measured pairs/s / 32`` steps (results/train_throughput.json, measured side by side
  with embedtune), so a busy machine cannot shorten it, and loading and saving are free for it.
* embedtune's budget counts the whole ``embedtune train`` command: loading, the dev evaluations
  before and after training, checkpoints, saving and the model card. ``--steps`` (default
  ``EMBEDTUNE_STEPS``) is sized so that the command fits the budget on a quiet machine; the report
  prints the measured wall time of the run and flags a row that went over.

    python benchmarks/defaults_vs_st.py all --budget 300          # or stage by stage:
    python benchmarks/defaults_vs_st.py train-peer | train-embedtune [--steps N] | eval [--only NAME] | report

Each model is evaluated as it was saved (the peer at 256 tokens, embedtune at its default 128).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine  # noqa: E402

ROOT = HERE.parent
WORK = ROOT / "models" / "bench-defaults"
PEER = WORK / "st-plain"
BATCH = 32
EMBEDTUNE_STEPS = 110  # the whole command in under 300 s on a quiet 2-core Sapphire Rapids


def _peer_steps(budget: float) -> int:
    rates = json.loads((RESULTS / "train_throughput.json").read_text())["variants"]
    return int(budget * rates["st-plain"]["pairs_per_s"] / BATCH)


def _save_state(key: str, value) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "state.json"
    state = json.loads(path.read_text()) if path.is_file() else {}
    state[key] = value
    path.write_text(json.dumps(state, indent=2))


def train_peer(budget: float) -> None:
    from st_plain import train_plain

    steps = _peer_steps(budget)
    started = time.perf_counter()
    seconds = train_plain(PEER, max_steps=steps)
    _save_state("st-plain", {"steps": steps, "train_seconds": round(seconds, 1), "wall": time.perf_counter() - started})


def train_ours(steps: int) -> None:
    """Run ``embedtune train`` with its defaults for ``steps`` steps; time the whole command."""
    name = "embedtune"
    output = WORK / name
    cmd = [sys.executable, "-m", "embedtune.cli", "train", "-o", str(output), "--max-steps", str(steps), "--overwrite"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    record = json.loads((output / "embedtune_train.json").read_text())
    _save_state(name, {"steps": steps, "train_seconds": record["train_seconds"], "wall": round(wall, 1)})
    print(f"embedtune train: {steps} steps, whole command {wall:.0f} s", flush=True)


def evaluate(only: str | None = None) -> None:
    names = json.loads((WORK / "state.json").read_text())
    for name in names:
        if only and name != only:
            continue
        path = WORK / name
        out = WORK / f"eval-{name}.json"
        cmd = [sys.executable, "-m", "embedtune.cli", "eval", "--model", str(path), "--json-out", str(out)]
        subprocess.run(cmd, check=True, cwd=ROOT)


def report(budget: float) -> None:
    state = json.loads((WORK / "state.json").read_text())
    rows = []
    for name in state:
        result = json.loads((WORK / f"eval-{name}.json").read_text())
        result = result[0] if isinstance(result, list) else result["results"][0]
        rows.append({"system": name, **state[name], "metrics": result["metrics"], "details": result.get("details")})
    summary = {"machine": machine(), "budget_seconds": budget, "rows": rows}
    (RESULTS / "defaults_vs_st.json").write_text(json.dumps(summary, indent=2) + "\n")
    keys = ["ndcg@10", "recall@10", "mrr@10", "recall@100"]
    lines = [
        "# Defaults that win: embedtune train vs a plain sentence-transformers script",
        "",
        f"Same pairs (data/debian train), same {budget:.0f} s budget: the plain script gets {budget:.0f} s of "
        "pure training (steps from its measured throughput, results/train_throughput.json); embedtune's whole "
        "command (loading, dev evaluation before and after, checkpoints, saving, model card) must fit it. "
        f"Test split, 2,816 queries vs 60,594 documents, exact search; {summary['machine']}.",
        "",
        "| system | steps | trainer s (this run) | command wall s (this run) | " + " | ".join(keys) + " |",
        "|---|---|---|---|" + "---|" * len(keys),
    ]
    for r in rows:
        metrics = " | ".join(f"{r['metrics'][k]:.4f}" for k in keys)
        wall = f"{r['wall']:.0f}" + (" (over budget)" if r["system"] != "st-plain" and r["wall"] > budget else "")
        lines.append(f"| {r['system']} | {r['steps']} | {r['train_seconds']:.0f} | {wall} | {metrics} |")
    lines.append("")
    (RESULTS / "defaults_vs_st.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["all", "train-peer", "train-embedtune", "eval", "report"])
    parser.add_argument("--budget", type=float, default=300.0, help="wall-clock seconds per side")
    parser.add_argument("--steps", type=int, default=EMBEDTUNE_STEPS, help="train-embedtune: steps of the run")
    parser.add_argument("--only", default=None, help="eval: just this row (st-plain or embedtune)")
    args = parser.parse_args()
    if args.stage in ("all", "train-peer"):
        train_peer(args.budget)
    if args.stage in ("all", "train-embedtune"):
        train_ours(args.steps)
    if args.stage in ("all", "eval"):
        evaluate(args.only)
    if args.stage in ("all", "report"):
        report(args.budget)


if __name__ == "__main__":
    main()
