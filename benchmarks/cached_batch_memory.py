"""Peak memory of one large-batch step: MNRL against its cached (GradCache) variant.

In-batch negatives get better with batch size, but plain MNRL keeps the activations of every text of
the batch for the backward pass, so memory grows with the batch. ``cached-mnrl`` embeds the batch in
mini-batches without gradients, computes the loss on the embeddings, then re-runs each mini-batch
with gradients, so its memory is bounded by the mini-batch. This trains all-MiniLM-L6-v2 for a few
steps at 128 tokens with each loss in its own process and records the process's peak RSS:

    python benchmarks/cached_batch_memory.py                    # batch 1024 cached, 128/256 plain
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine  # noqa: E402

RUNS = (("mnrl", 128), ("mnrl", 256), ("cached-mnrl", 1024))


def child(loss: str, batch: int, steps: int) -> dict:
    from embedtune.training import TrainConfig, train

    with tempfile.TemporaryDirectory() as scratch:
        result = train(
            TrainConfig(
                output=Path(scratch) / "m",
                loss=loss,
                batch_size=batch,
                mini_batch_size=32,
                max_steps=steps,
                max_seq_length=128,
                dev=False,
                show_progress=False,
            )
        )
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux
    return {
        "loss": loss,
        "batch": batch,
        "steps": steps,
        "seconds": round(result.seconds, 1),
        "peak_rss_gib": round(peak_gib, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.steps)))
        return
    rows = []
    for loss, batch in RUNS:
        cmd = [sys.executable, __file__, "--child", loss, str(batch), "--steps", str(args.steps)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"loss": loss, "batch": batch, "error": done.stderr.strip().splitlines()[-1][:300]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    summary = {"machine": machine(), "model": "all-MiniLM-L6-v2", "max_seq_length": 128, "rows": rows}
    (RESULTS / "cached_batch_memory.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# Peak memory of large in-batch-negative batches",
        "",
        f"all-MiniLM-L6-v2, 128 tokens, {args.steps} training steps per run, bf16 autocast; {summary['machine']}.",
        "",
        "| loss | batch (pairs) | peak RSS GiB | seconds |",
        "|---|---|---|---|",
        *(
            f"| {r['loss']} | {r['batch']} | {r.get('peak_rss_gib', r.get('error'))} | {r.get('seconds', '')} |"
            for r in rows
        ),
        "",
    ]
    (RESULTS / "cached_batch_memory.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
