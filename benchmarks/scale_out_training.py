"""Data-parallel training: 1 process against 2 on this machine, for the overhead, not the speed.

Same model (all-MiniLM-L6-v2), same pairs (data/debian train), same global batch: 1 process with
batch 32 and 2 threads against ``torchrun --nproc_per_node 2`` with batch 16 and 1 thread each, so
both use the same cores and see the same global batches (embedtune's duplicate-free global batch cut
into one slice per process). What the 2-process run pays: start-up (two interpreters, the process
group, rank 0's one-off set-up broadcast to rank 1) and per step the all-gather of embeddings for the
in-batch negatives plus DDP's all-reduce of the gradients (gloo). On a 2-core machine the two
processes only share the cores the single process had, so a speed-up is not the question; the
question is what the machinery costs, which is what a multi-GPU run pays on top of its compute.

    nice python benchmarks/scale_out_training.py               # 2 variants x 2 repeats, ~8 min on 2 cores
    nice python benchmarks/scale_out_training.py --steps 20 --repeats 1

Writes benchmarks/results/scale_out_training.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, save_results  # noqa: E402

GLOBAL_BATCH, MAX_SEQ_LENGTH, WARMUP_STEPS = 32, 128, 3
VARIANTS = {"1 process x batch 32": 1, "2 processes x batch 16": 2}


def run_one(steps: int, out: Path) -> None:
    """Train in this process (one rank of a torchrun job, or alone); rank 0 writes its timings to ``out``."""
    from transformers import TrainerCallback

    from embedtune.training import TrainConfig, distributed, train

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs) -> None:
            self.times.append(time.perf_counter())

    timer, processes = StepTimer(), distributed.world_size()
    config = TrainConfig(
        output=out.parent / "model",  # written by rank 0 alone
        max_steps=steps,
        batch_size=GLOBAL_BATCH // processes,
        max_seq_length=MAX_SEQ_LENGTH,
        precision="fp32",
        dev=False,
        show_progress=False,
        seed=0,
    )
    result = train(config, callbacks=[timer])
    if distributed.is_main():
        step_times = [b - a for a, b in zip(timer.times, timer.times[1:], strict=False)][WARMUP_STEPS:]
        out.write_text(
            json.dumps(
                {
                    "processes": processes,
                    "median_step_s": statistics.median(step_times),
                    "trainer_seconds": result.seconds,
                    "losses": result.losses,
                }
            )
        )


def launch(processes: int, steps: int) -> dict:
    """One variant in child processes; its wall time from launch to exit, beside the trainer's own timings."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        script = [__file__, "--child", "--steps", str(steps), "--out", str(out)]
        if processes == 1:
            cmd, threads = [sys.executable, *script], "2"
        else:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
            cmd, threads = [*launcher, *script], "1"
        env = {**os.environ, "OMP_NUM_THREADS": threads, "TQDM_DISABLE": "1", "PYTHONPATH": str(HERE.parent)}
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
        result = json.loads(out.read_text())
    result["wall_s"] = wall
    result["outside_training_s"] = wall - result["trainer_seconds"]
    return result


def _markdown(summary: dict) -> str:
    rows = summary["variants"]
    one = rows["1 process x batch 32"]
    lines = [
        "# Data-parallel training: 1 process vs 2 on this machine (overhead, not speed)",
        "",
        f"all-MiniLM-L6-v2, data/debian train pairs, global batch {GLOBAL_BATCH}, max_seq_length "
        f"{MAX_SEQ_LENGTH}, fp32, mnrl with in-batch negatives gathered across processes, {summary['steps']} "
        f"steps per run (first {WARMUP_STEPS} not timed), {summary['repeats']} alternating repeats; both "
        f"variants use the same 2 cores (2 threads, or 2 processes x 1 thread); {summary['machine']}.",
        "",
        "| variant | median step (s) | pairs/s | wall, launch to exit (s) | of which outside training (s) |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['median_step_s']:.3f} | {GLOBAL_BATCH / r['median_step_s']:.1f} | {r['wall_s']:.1f} | "
            f"{r['outside_training_s']:.1f} |"
        )
    two = rows["2 processes x batch 16"]
    lines += [
        "",
        f"Per step, 2 processes take {two['median_step_s'] / one['median_step_s']:.2f}x the single process's time "
        f"on the same cores; start-up and set-up outside training cost "
        f"{two['outside_training_s'] - one['outside_training_s']:+.1f} s. Largest difference of the logged "
        f"losses between the two (same global batches; dropout masks differ): {summary['loss_max_abs_diff']:.4f}.",
        "",
        "Medians over the repeats. The machine is shared, so single timings drift by 10-20%.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one rank, in a child process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.steps, args.out)
        return
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        order = list(VARIANTS) if repeat % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            result = launch(VARIANTS[name], args.steps)
            runs[name].append(result)
            print(f"repeat {repeat + 1} {name}: {result['median_step_s']:.3f} s/step, {result['wall_s']:.1f} s wall")
    first = [run[0]["losses"] for run in runs.values()]
    diff = max(abs(a[1] - b[1]) for a, b in zip(*first, strict=True))
    keys = ("median_step_s", "wall_s", "outside_training_s")
    summary = {
        "machine": machine(),
        "steps": args.steps,
        "repeats": args.repeats,
        "loss_max_abs_diff": diff,
        "variants": {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()},
        "runs": runs,
    }
    save_results("scale_out_training", summary, _markdown(summary))


if __name__ == "__main__":
    main()
