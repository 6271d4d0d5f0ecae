"""``embedtune train`` with its defaults, as the library runs it, keeping a copy of the model at every dev evaluation.

The time-to-quality report (benchmarks/regimes.py) needs the test score of the model a user would
have had at each moment of the run, not only of the checkpoint kept at the end: this is the same
run as ``embedtune train --data DIR -o OUT`` (the CLI only wires :func:`embedtune.training.train`),
plus a callback that saves the model at each evaluation into ``OUT.snapshots/step-N``, at the
length it will search with. The seconds spent saving them are measured and printed, so the report
takes them out of the run's time. Prints one JSON object: the train result's steps, timings, dev
curve, choices, and the snapshots.

    python benchmarks/timed_train.py --data models/bench-regimes/small-quick/data -o /tmp/m [--set epochs=4]

``--set NAME=VALUE`` (repeatable) sets a TrainConfig field (VALUE read as JSON), for the options the
report compares with the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    from transformers import TrainerCallback

    from embedtune.training import TRAIN_RECORD, TrainConfig, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a TrainConfig field")
    args = parser.parse_args()
    settings = {name: json.loads(value) for name, _, value in (s.partition("=") for s in args.set)}
    snapshots = args.output.with_name(args.output.name + ".snapshots")
    saved: list[dict] = []
    length: dict[str, int] = {}

    class Snapshots(TrainerCallback):
        def on_evaluate(self, targs, state, control, model=None, **kwargs) -> None:
            started = time.perf_counter()
            kept = model.max_seq_length
            model.max_seq_length = length.get("inference", kept)
            model.save(str(snapshots / f"step-{state.global_step}"))
            model.max_seq_length = kept
            saved.append({"step": state.global_step, "save_s": time.perf_counter() - started})

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if line.startswith("inference_max_seq_length: "):
            length["inference"] = int(line.split()[1])

    # No bars: the run's own lines (choices, progress with the ETA) go to stderr, the JSON alone to stdout.
    config = TrainConfig(
        output=args.output, data=args.data, overwrite=True, max_steps=args.max_steps, show_progress=False, **settings
    )
    result = train(config, callbacks=[Snapshots()], log=log)
    record = json.loads((args.output / TRAIN_RECORD).read_text(encoding="utf-8"))
    choices = {name: c.value for name, c in result.choices.items()}
    print(
        json.dumps(
            {
                "steps": result.steps,
                "timings": result.timings,
                "dev_curve": record["dev_curve"],
                "best_step": record["best_step"],
                "choices": choices,
                "snapshots": [{**s, "path": str(snapshots / f"step-{s['step']}")} for s in saved],
            }
        )
    )


if __name__ == "__main__":
    main()
