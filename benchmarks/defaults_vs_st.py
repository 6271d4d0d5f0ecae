"""Defaults that win: ``embedtune train`` with its defaults against a plain sentence-transformers script.

Both train all-MiniLM-L6-v2 on the same pairs (data/debian train) for the same wall-clock budget and
are scored on the test split (2,816 queries against all 60,594 documents) by the same evaluator. The
peer is benchmarks/st_plain.py: MNRL, batch 32, lr 2e-5, NO_DUPLICATES sampler, fp32, the model's
own 256-token limit. The budget becomes a step count per side from each side's measured throughput
(results/train_throughput.json), so the comparison does not depend on how busy the machine is during
this run; each side's actual training wall time is reported beside it.

    python benchmarks/defaults_vs_st.py all --budget 300          # or stage by stage:
    python benchmarks/defaults_vs_st.py train-peer | train-embedtune | eval | report

Each model is evaluated as it was saved (the peer at 256 tokens, embedtune at its default 128).
embedtune's defaults also evaluate a dev sample 5 times and save checkpoints, which the throughput
budget does not count; ``train-embedtune --steps N`` adds a row trained for N steps, sized so that
the whole command, dev evaluation included, fits the budget on a quiet machine (96 steps for 300 s):

    python benchmarks/defaults_vs_st.py train-embedtune --steps 96
    python benchmarks/defaults_vs_st.py eval --only embedtune-96
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


def _steps(budget: float) -> dict[str, int]:
    rates = json.loads((RESULTS / "train_throughput.json").read_text())["variants"]
    return {
        "st-plain": int(budget * rates["st-plain"]["pairs_per_s"] / BATCH),
        "embedtune": int(budget * rates["embedtune"]["pairs_per_s"] / BATCH),
    }


def _save_state(key: str, value) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "state.json"
    state = json.loads(path.read_text()) if path.is_file() else {}
    state[key] = value
    path.write_text(json.dumps(state, indent=2))


def train_peer(budget: float) -> None:
    from st_plain import train_plain

    steps = _steps(budget)["st-plain"]
    started = time.perf_counter()
    seconds = train_plain(PEER, max_steps=steps)
    _save_state("st-plain", {"steps": steps, "train_seconds": round(seconds, 1), "wall": time.perf_counter() - started})


def train_ours(budget: float, steps: int | None = None) -> None:
    """Train with the defaults for the budget's step count, or for ``steps`` (a row of its own)."""
    name = "embedtune" if steps is None else f"embedtune-{steps}"
    steps = steps or _steps(budget)["embedtune"]
    output = WORK / name
    cmd = [sys.executable, "-m", "embedtune.cli", "train", "-o", str(output), "--max-steps", str(steps), "--overwrite"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    record = json.loads((output / "embedtune_train.json").read_text())
    _save_state(name, {"steps": steps, "train_seconds": record["train_seconds"], "wall": round(wall, 1)})


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
    for name in json.loads((WORK / "state.json").read_text()):
        result = json.loads((WORK / f"eval-{name}.json").read_text())
        result = result[0] if isinstance(result, list) else result["results"][0]
        rows.append({"system": name, **state[name], "metrics": result["metrics"], "details": result.get("details")})
    summary = {"machine": machine(), "budget_seconds": budget, "rows": rows}
    (RESULTS / "defaults_vs_st.json").write_text(json.dumps(summary, indent=2) + "\n")
    keys = ["ndcg@10", "recall@10", "mrr@10", "recall@100"]
    lines = [
        "# Defaults that win: embedtune train vs a plain sentence-transformers script",
        "",
        f"Same pairs (data/debian train), same {budget:.0f} s training budget turned into steps by each side's "
        "measured throughput; test split, 2,816 queries vs 60,594 documents, exact search; "
        f"{summary['machine']}.",
        "",
        "| system | steps | trainer s (this run) | command wall s (this run) | " + " | ".join(keys) + " |",
        "|---|---|---|---|" + "---|" * len(keys),
    ]
    for r in rows:
        metrics = " | ".join(f"{r['metrics'][k]:.4f}" for k in keys)
        lines.append(f"| {r['system']} | {r['steps']} | {r['train_seconds']:.0f} | {r['wall']:.0f} | {metrics} |")
    lines.append("")
    (RESULTS / "defaults_vs_st.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["all", "train-peer", "train-embedtune", "eval", "report"])
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per side")
    parser.add_argument("--steps", type=int, default=None, help="train-embedtune: this many steps, as its own row")
    parser.add_argument("--only", default=None, help="eval: just this row (e.g. embedtune-96)")
    args = parser.parse_args()
    if args.stage in ("all", "train-peer"):
        train_peer(args.budget)
    if args.stage in ("all", "train-embedtune"):
        train_ours(args.budget, args.steps)
    if args.stage in ("all", "eval"):
        evaluate(args.only)
    if args.stage in ("all", "report"):
        report(args.budget)


if __name__ == "__main__":
    main()
