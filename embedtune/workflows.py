"""Compositions that span two pipeline stages; the only module that knows both mining and training.

Each stage stays ignorant of the others (mining writes rows, training reads rows), so a recipe that
chains them lives here: :func:`mine_for_training` mines hard negatives with the model about to be
fine-tuned, then hands training a config that reads the mined rows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from embedtune.encoding import EncodeSettings
from embedtune.errors import EmbedtuneError
from embedtune.io import check_destination, check_writable
from embedtune.mining import MiningConfig, MiningReport, mine_to_file, pairs_path
from embedtune.training import TRAIN_RECORD, TrainConfig, checkpoints_dir


def mined_path(output: Path) -> Path:
    """Where :func:`mine_for_training` keeps the mined rows: beside the model directory, not inside it."""
    output = Path(output)
    return output.with_name(output.name + ".mined.jsonl.gz")


def mine_for_training(
    config: TrainConfig, selection: MiningConfig | None = None, *, retriever: str = "dense"
) -> tuple[TrainConfig, MiningReport]:
    """Mine negatives for ``config``'s BEIR data with its base model; return the config that trains on them.

    The model about to be fine-tuned is the dense retriever (same token limit, same precision, the
    same pooling for a plain checkpoint), so negatives are hard for the model that will learn from
    them. Rows go to :func:`mined_path` with their report; the returned config reads them instead
    of the pairs (n-tuple MNRL by default, or ``loss="margin-mse"`` on the kept scores), and keeps
    the folder's dev split as its dev set: the mined file alone has none, and the run would hold out
    a slice of its training queries instead of evaluating on the split the user's folder has. Rows
    no negative survived for (the mining's companion pairs file) train as a second dataset of the
    same run, so no pair is lost; under a loss that needs negatives (MarginMSE) they would teach
    nothing, and are left out.
    """
    from embedtune.models import load_model
    from embedtune.training_data import is_beir_folder

    if not is_beir_folder(config.data):
        raise EmbedtuneError(f"{config.data}: mining needs a BEIR folder (corpus, queries, qrels) to search")
    if config.resume:
        raise EmbedtuneError(
            "mining before training cannot be combined with resume: resume training on the mined file instead"
        )
    check_destination(config.output, config.overwrite, made_by=TRAIN_RECORD)  # refused before the mining
    check_writable(config.output, directory=True)
    if checkpoints_dir(config.output).exists() and not config.overwrite:
        raise EmbedtuneError(
            f"{checkpoints_dir(config.output)}: checkpoints of an earlier run exist; "
            "overwrite=True starts again (mining cannot be resumed)"
        )
    model = None
    if retriever == "dense":
        model = load_model(
            config.model, max_seq_length=config.max_seq_length, pooling=config.pooling, normalize=config.normalize
        )
    report = mine_to_file(
        config.data,
        mined_path(config.output),
        split=config.split,
        retriever=retriever,
        model=model,
        config=selection,
        encoding=EncodeSettings(precision=config.precision),
        model_name=str(config.model),
        overwrite=config.overwrite,
        show_progress=config.show_progress,
    )
    mined = dataclasses.replace(config, data=mined_path(config.output))
    if report.pairs_file and config.loss != "margin-mse":
        mined = dataclasses.replace(mined, more_data=(*config.more_data, pairs_path(mined_path(config.output))))
    if config.dev and config.dev_data is None and config.dev_settings().has_split():
        mined = dataclasses.replace(mined, dev_data=config.data)
    return mined, report
