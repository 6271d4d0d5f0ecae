"""Data-parallel training: 1 process against 2 on this machine, for the overhead, not the speed.

Same model (all-MiniLM-L6-v2), same pairs (data/debian train), same global batch of 32: one process
with batch 32 against ``torchrun --nproc_per_node 2`` with batch 16 each, one thread per process in
both, so that both see the same global batches (embedtune's duplicate-free global batch cut into one
slice per process) and do the same arithmetic. What the 2-process run adds: start-up (two
interpreters, the process group, rank 0's one-off set-up sent to rank 1) and per step the all-gather
of embeddings for the in-batch negatives plus DDP's all-reduce of the gradients (gloo).

The overhead is measured as CPU time: the CPU seconds a step costs, summed over the processes
(``time.process_time`` per rank). On a 2-core machine shared with other jobs, wall time says more
about the neighbours than about DDP (more processes get more of the scheduler's share); CPU time
does not depend on who else runs. Wall times are reported beside it.

    nice python benchmarks/scale_out_training.py               # 2 variants x 1 repeat, ~10 min on 2 idle cores
    nice python benchmarks/scale_out_training.py --steps 20 --repeats 2

Writes benchmarks/results/scale_out_training.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
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
    """Train in this process (one rank of a torchrun job, or alone); each rank writes its timings beside ``out``."""
    from transformers import TrainerCallback

    from embedtune.training import TrainConfig, distributed, train

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []

        def on_step_end(self, args, state, control, **kwargs) -> None:
            self.wall.append(time.perf_counter())
            self.cpu.append(time.process_time())

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

    def per_step(times: list[float]) -> float:
        return statistics.median([b - a for a, b in itertools.pairwise(times)][WARMUP_STEPS:])

    mine = {"step_wall_s": per_step(timer.wall), "step_cpu_s": per_step(timer.cpu), "trainer_seconds": result.seconds}
    out.with_name(f"rank{distributed.rank()}.json").write_text(json.dumps(mine | {"losses": result.losses}))


def launch(processes: int, steps: int) -> dict:
    """One variant in child processes: per-step wall and CPU time (summed over ranks), wall from launch to exit."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        script = [__file__, "--child", "--steps", str(steps), "--out", str(out)]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        cmd = [sys.executable, *script] if processes == 1 else [*launcher, *script]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(HERE.parent)}
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
        ranks = [json.loads((Path(scratch) / f"rank{r}.json").read_text()) for r in range(processes)]
    return {
        "processes": processes,
        "step_cpu_s": sum(r["step_cpu_s"] for r in ranks),  # CPU seconds per step, all processes together
        "step_wall_s": ranks[0]["step_wall_s"],
        "wall_s": wall,
        "outside_training_s": wall - ranks[0]["trainer_seconds"],
        "losses": ranks[0]["losses"],
    }


def _markdown(summary: dict) -> str:
    rows = summary["variants"]
    one, two = rows["1 process x batch 32"], rows["2 processes x batch 16"]
    lines = [
        "# Data-parallel training: 1 process vs 2 on this machine (overhead, not speed)",
        "",
        f"all-MiniLM-L6-v2, data/debian train pairs, global batch {GLOBAL_BATCH}, max_seq_length "
        f"{MAX_SEQ_LENGTH}, fp32, mnrl with in-batch negatives gathered across processes, one thread per "
        f"process, {summary['steps']} steps per run (first {WARMUP_STEPS} not timed), {summary['repeats']} "
        f"alternating repeat(s); {summary['machine']}, load average {summary['load']} when it started.",
        "",
        "| variant | CPU s per step (all processes) | wall s per step | wall, launch to exit (s) "
        "| of which outside training (s) |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['step_cpu_s']:.2f} | {r['step_wall_s']:.2f} | {r['wall_s']:.1f} | "
            f"{r['outside_training_s']:.1f} |"
        )
    lines += [
        "",
        f"A step costs {two['step_cpu_s'] / one['step_cpu_s']:.2f}x the CPU time on 2 processes (the same "
        f"arithmetic, plus the all-gather, the gradient all-reduce and DDP's bookkeeping); start-up and set-up "
        f"outside training differ by {two['outside_training_s'] - one['outside_training_s']:+.1f} s. Largest "
        f"difference of the logged losses (same global batches; dropout masks differ): "
        f"{summary['loss_max_abs_diff']:.4f}. Wall times depend on the machine's other jobs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one rank, in a child process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.steps, args.out)
        return
    load = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        order = list(VARIANTS) if repeat % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            result = launch(VARIANTS[name], args.steps)
            runs[name].append(result)
            print(f"repeat {repeat + 1} {name}: {result['step_cpu_s']:.2f} CPU s/step, {result['wall_s']:.1f} s wall")
    first = [run[0]["losses"] for run in runs.values()]
    diff = max(abs(a[1] - b[1]) for a, b in zip(*first, strict=True))
    keys = ("step_cpu_s", "step_wall_s", "wall_s", "outside_training_s")
    summary = {
        "machine": machine(),
        "load": round(load, 1),
        "steps": args.steps,
        "repeats": args.repeats,
        "loss_max_abs_diff": diff,
        "variants": {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()},
        "runs": runs,
    }
    save_results("scale_out_training", summary, _markdown(summary))


if __name__ == "__main__":
    main()
