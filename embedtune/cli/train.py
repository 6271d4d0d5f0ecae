"""``embedtune train``: its options are TrainConfig's settings (and MiningConfig's for ``--mine``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from embedtune.cli.app import EmbedtuneCommand, emit, json_option, note, settings_from_options, show_progress
from embedtune.cli.mine import echo_mining, mining_payload, retriever_option
from embedtune.cli.options import given, options_from
from embedtune.mining import MiningConfig
from embedtune.settings import meta_of
from embedtune.training import TrainConfig, TrainResult, distributed


def _describe(result: TrainResult) -> str:
    from embedtune.training import metric_label

    dev = ""
    if result.metric and result.dev_after:
        before = result.dev_before.get(result.metric, float("nan"))
        dev = f"; dev {metric_label(result.metric)} {before:.4f} -> {result.dev_after[result.metric]:.4f}"
    first, last = result.mean_loss(0, 0.2), result.mean_loss(0.8, 1)
    losses = (
        "no loss logged"
        if first is None or last is None
        else f"mean loss {first:.4f} over the first 20% of steps, {last:.4f} over the last 20%"
    )
    return (
        f"trained {result.steps} steps on {result.rows} rows in {result.seconds:.0f} s ({losses}){dev}; "
        f"model written to {result.output}"
    )


def _payload(result: TrainResult) -> dict:
    """``train --json``'s fields; dev metrics by their short names (``ndcg@10``), as the text output names them."""
    from embedtune.training import metric_label

    def dev(metrics: dict[str, float]) -> dict[str, float]:
        return {metric_label(k): v for k, v in metrics.items() if k != metric_label(k)}  # not runtime, epoch...

    return {
        "output": result.output,
        "steps": result.steps,
        "rows": result.rows,
        "seconds": round(result.seconds, 2),
        "mean_loss_first_20pct": result.mean_loss(0, 0.2),
        "mean_loss_last_20pct": result.mean_loss(0.8, 1),
        "losses": [{"step": step, "loss": loss} for step, loss in result.losses],
        "metric": metric_label(result.metric) if result.metric else None,
        "dev_before": dev(result.dev_before),
        "dev_after": dev(result.dev_after),
        "choices": {name: asdict(choice) for name, choice in result.plan.choices.items()},  # the interval as used
        "worse_than_base": result.worse_than_base,
        "timings": result.timings,  # wall seconds per stage of the run
    }


@click.command(cls=EmbedtuneCommand)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML file of settings (names as below, with underscores); options given here override it. "
    "The resolved config is saved with the model as train_config.yaml.",
)
@click.option(
    "--data",
    "data",
    multiple=True,
    type=click.Path(path_type=Path),
    help=meta_of(TrainConfig, "data").help + " Repeat to train on several datasets together (see --mix).",
)
@options_from(TrainConfig, exclude=("data",))  # --data is repeatable: the first is data, the others more_data
@click.option(
    "--mine",
    "mine_first",
    is_flag=True,
    help="First mine hard negatives for the --data BEIR split with the base --model (options below; rows "
    "and report go to OUTPUT.mined.jsonl.gz), then train on the mined n-tuples.",
)
@retriever_option
@options_from(MiningConfig, exclude=("seed",))  # train --mine mines with the run's own seed
@json_option(
    "Print the result as one JSON document (schema embedtune.train/1; with --mine, its report under 'mining')."
)
def train(config_file: Path | None, mine_first: bool, retriever: str, as_json: bool, **options) -> None:
    """Fine-tune an encoder into a sentence embedder.

    \b
    Examples:
      embedtune train -o models/mine                                # data/debian, MNRL
      embedtune train -o models/sts --data sts-train.tsv --score-range 0 5 --dev-data sts-dev.tsv
      embedtune train -o models/mined --data mined.jsonl --loss margin-mse
      embedtune train -o models/hard --mine --num-negatives 3     # mine with the base model, then train
      embedtune train --config run.yaml --lr 1e-5                   # file + override

    Batches never hold the same text twice (a text is never a negative of its twin). With a dev set
    the best checkpoint by --metric is kept; without a dev split a slice of the training queries is
    held out as one (--dev-split none: no dev set). What was chosen from the data (token lengths, dev
    set, loss) is said on stderr, in embedtune_train.json and on the model card. The output holds the
    model, README.md (model card), metrics.jsonl, training.png, train_config.yaml and embedtune_train.json.

    \b
    Data-parallel, on N processes (GPUs, or CPU processes with gloo):
      torchrun --nproc_per_node N -m embedtune train -o models/ddp ...
      accelerate launch --multi_gpu --num_processes N -m embedtune train -o models/ddp ...

    --batch-size is per process. The in-batch-negative losses (mnrl, cached-mnrl, symmetric-mnrl)
    take every process's texts as negatives, so N processes x batch B train like one process with
    batch N*B (same batches, loss and gradients); cosent/angle rank pairs within each process's batch.
    Rank 0 alone checks the data, mines, evaluates dev and writes the model and checkpoints; --resume
    (on as many processes) continues a killed run from its last complete checkpoint.
    """
    try:
        _train(config_file, mine_first, retriever, as_json, options)
    except distributed.PeerStopped:  # rank 0 says why; the other processes stop without repeating it
        raise click.exceptions.Exit(1) from None


def _train(config_file: Path | None, mine_first: bool, retriever: str, as_json: bool, options: dict) -> None:
    from embedtune.training import train as run_training

    say = note if distributed.is_main() else lambda _line: None  # one voice for N processes: rank 0's
    selection = given(MiningConfig, options, exclude=("seed",))  # mining is seeded by the run's seed
    datasets = options.pop("data", ())  # repeatable --data: the first is data, the others more_data
    settings = given(TrainConfig, options) | {"show_progress": show_progress() and distributed.is_main()}
    if datasets:
        settings |= {"data": datasets[0]} | ({"more_data": tuple(datasets[1:])} if len(datasets) > 1 else {})
    if config_file is None and "output" not in settings:
        raise click.UsageError("give --output (or a --config file that names it)")
    with settings_from_options():
        config = TrainConfig.from_yaml(config_file, **settings) if config_file is not None else TrainConfig(**settings)
        mining_config = MiningConfig(**selection, seed=config.seed) if mine_first else None
    try:
        mining = None
        if mining_config is not None:
            from embedtune.workflows import mine_for_training

            say(f"loading model {config.model} to mine with ...")
            distributed.start()
            config, report = distributed.on_main(lambda: mine_for_training(config, mining_config, retriever=retriever))
            mining = mining_payload(report, config.data)
            if not as_json and distributed.is_main():
                echo_mining(report, config.data)
        elif selection or retriever != "dense":
            raise click.UsageError("the mining options (--num-negatives, --max-rank, ...) only apply with --mine")
        say(f"loading model {config.model} and the training data ...")
        result = run_training(config, log=lambda line: say(f"chose {line}"), progress=say)
        if not distributed.is_main():
            return
        if as_json:
            emit("train", _payload(result) | ({"mining": mining} if mining else {}))
        else:
            click.echo(_describe(result))
    finally:
        distributed.stop()  # every rank leaves the process group before it exits
