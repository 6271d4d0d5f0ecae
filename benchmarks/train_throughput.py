"""Training throughput: embedtune against the plain sentence-transformers trainer, side by side.

Same model (all-MiniLM-L6-v2), same pairs (data/debian train, in the same seeded order), same batch
(32) and the same token limit (128). Each variant runs in its own process, and the variants alternate
over the repeats so that drift of the machine hits all of them alike. Throughput is pairs per second
over the steps after the warm-up (their summed time, not the median step: batches bucketed by length
differ in cost by design, and only their total is what a run pays; a step = forward + backward +
optimiser update of one batch); the trainer's total wall time is reported beside it.

    python benchmarks/train_throughput.py                 # 3 variants x 2 repeats, ~10 min on 2 cores
    python benchmarks/train_throughput.py --steps 40 --repeats 3

Variants: ``st-plain`` (the peer, fp32 as the trainer defaults to), ``embedtune-fp32``, ``embedtune``
(its default precision: bf16 autocast where one timed step shows it faster, see
:mod:`embedtune.training.autocast`) and ``embedtune-buckets`` (the default precision and batches of
similar length, ``length_window=8``). ``embedtune-fp32`` and ``embedtune`` see identical batches, so
their logged losses show what bf16 does to the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine  # noqa: E402

VARIANTS = ("st-plain", "embedtune-fp32", "embedtune", "embedtune-buckets")
BATCH, MAX_SEQ_LENGTH, WARMUP_STEPS = 32, 128, 5


def _timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kwargs) -> None:
            self.times.append(time.perf_counter())

    return StepTimer()


def run_variant(variant: str, steps: int) -> dict:
    """Train one variant for ``steps`` steps in this process and measure it."""
    import torch

    timer = _timer()
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "model"
        if variant == "st-plain":
            from st_plain import train_plain

            seconds = train_plain(output, max_steps=steps, max_seq_length=MAX_SEQ_LENGTH, callbacks=[timer])
            losses = None
        else:
            from embedtune.training import TrainConfig, train

            config = TrainConfig(
                output=output,
                max_steps=steps,
                batch_size=BATCH,
                max_seq_length=MAX_SEQ_LENGTH,
                precision="fp32" if variant == "embedtune-fp32" else "auto",
                length_window=8 if variant == "embedtune-buckets" else 0,
                dev=False,
                show_progress=False,
            )
            result = train(config, callbacks=[timer])
            seconds, losses = result.seconds, result.losses
    step_times = [b - a for a, b in zip(timer.times, timer.times[1:], strict=False)][WARMUP_STEPS:]
    mean = sum(step_times) / len(step_times)
    return {
        "variant": variant,
        "steps": steps,
        "pairs_per_s": round(BATCH / mean, 2),
        "mean_step_s": round(mean, 3),
        "precision": result.choices["precision"].value if variant != "st-plain" else "fp32",
        "trainer_seconds": round(seconds, 1),
        "losses": losses,
        "threads": torch.get_num_threads(),
    }


def _markdown(summary: dict) -> str:
    rows = summary["variants"]
    peer = rows["st-plain"]["pairs_per_s"]
    lines = [
        "# Training throughput (pairs/s)",
        "",
        f"all-MiniLM-L6-v2, data/debian train pairs, batch {BATCH}, max_seq_length {MAX_SEQ_LENGTH}, "
        f"{summary['steps']} steps per run (first {WARMUP_STEPS} not timed), {summary['repeats']} alternating "
        f"repeats; {summary['machine']}.",
        "",
        "| variant | pairs/s (median of repeats) | all repeats | vs st-plain |",
        "|---|---|---|---|",
    ]
    for name in VARIANTS:
        r = rows[name]
        lines.append(
            f"| {name} | {r['pairs_per_s']:.1f} | {', '.join(f'{x:.1f}' for x in r['all'])} | "
            f"{r['pairs_per_s'] / peer:.2f}x |"
        )
    lines += ["", f"bf16 vs fp32 logged-loss difference (same batches): {summary['bf16_loss_max_abs_diff']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--run", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in a child process
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_variant(args.run, args.steps)))
        return
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for repeat in range(args.repeats):
        order = VARIANTS if repeat % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            cmd = [sys.executable, __file__, "--run", variant, "--steps", str(args.steps)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            runs[variant].append(result)
            print(f"repeat {repeat + 1} {variant}: {result['pairs_per_s']:.1f} pairs/s", flush=True)
    fp32, bf16 = runs["embedtune-fp32"][0]["losses"], runs["embedtune"][0]["losses"]
    diff = max(abs(a[1] - b[1]) for a, b in zip(fp32, bf16, strict=True))
    summary = {
        "machine": machine(),
        "steps": args.steps,
        "repeats": args.repeats,
        "bf16_loss_max_abs_diff": round(diff, 4),
        "variants": {
            v: {"pairs_per_s": statistics.median(r["pairs_per_s"] for r in rs), "all": [r["pairs_per_s"] for r in rs]}
            for v, rs in runs.items()
        },
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_throughput.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "train_throughput.md").write_text(_markdown(summary))
    print(_markdown(summary))


if __name__ == "__main__":
    main()
