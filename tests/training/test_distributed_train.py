"""``torchrun`` / ``accelerate launch -m embedtune train`` on 2 CPU processes (gloo): it completes and
rank 0 alone speaks and writes; a data error stops every rank at once with one message; a kill of a
rank leaves a checkpoint that ``--resume`` continues from."""

from __future__ import annotations

import json
import textwrap

import pytest
from helpers import launch

from embedtune.training import TrainConfig, checkpoints_dir

KILL_RANK_1_AT_STEP_6 = """
import os, signal, sys
from transformers import TrainerCallback
from embedtune.training import TrainConfig, train

class Kill(TrainerCallback):  # step 6 begins on rank 1 after rank 0 has saved checkpoint-4 and run step 5
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 6 and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGKILL)

train(TrainConfig.from_yaml(sys.argv[1]), callbacks=[Kill()])
"""


def _wider(beir_dir):
    """The tiny BEIR folder with 40 more documents and 12 more training queries: mined rows (query, positive,
    negative) that fill duplicate-free global batches of 2 processes x 2 rows, which 5 rows over 8 documents
    cannot, and every row keeps a negative (no margin), so all train as one dataset."""
    from helpers import CORPUS, QRELS, QUERIES, write_beir

    corpus = CORPUS | {f"extra{i}": f"extra document {i} about topic {i % 7}" for i in range(40)}
    queries = QUERIES | {f"qx{i}": f"what is topic {i}" for i in range(12)}
    train = [*QRELS["train"], *((f"qx{i}", f"extra{i}") for i in range(12))]
    return write_beir(beir_dir.parent / "wider", corpus, queries, {**QRELS, "train": train})


@pytest.mark.parametrize(("launcher", "mine"), [("torchrun", False), ("accelerate", True)])
def test_two_processes_train_once_and_write_once(tmp_path, tiny_st, beir_dir, launcher, mine):
    output = tmp_path / "model"
    data = _wider(beir_dir) if mine else beir_dir
    args = ["--output", output, "--model", tiny_st, "--data", data, "--max-steps", 4, "--batch-size", 2]
    args += ["--mine", "--num-negatives", 1, "--relative-margin", "none"] if mine else []
    done = launch("-m", "embedtune", "train", *args, "--precision", "fp32", "--seed", 0, "--json", launcher=launcher)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # one JSON document: rank 1 prints nothing
    assert result["schema"] == "embedtune.train/1" and result["steps"] == 4
    assert done.stderr.count("and the training data") == 1 and done.stderr.count("chose loss: mnrl") == 1
    assert done.stderr.count("to mine with") == int(mine) and ("mining" in result) == mine  # mined once, on rank 0
    assert mine or result["dev_after"], "the dev split was evaluated (on rank 0, metrics sent to rank 1)"
    record = json.loads((output / "embedtune_train.json").read_text())
    assert record["processes"] == 2 and record["negatives_across_processes"] is True
    assert "2 x batch 2 = 4 rows a step" in (output / "README.md").read_text()
    mined = ["model.mined.jsonl.gz", "model.mined.report.json", "model.mined.report.png"] if mine else []
    given = ["beir", "model", "wider"] if mine else ["beir", "model"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*given, *mined])  # no temporary folder left


def test_a_data_error_stops_every_process_with_one_message(tmp_path, tiny_st):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"query": "a", "positive": "b"}\n{"query": "c"}\n')
    done = launch("-m", "embedtune", "train", "-o", tmp_path / "model", "--model", tiny_st, "--data", data)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "pairs.jsonl" in errors[0], done.stderr[-3000:]
    assert not (tmp_path / "model").exists() and not checkpoints_dir(tmp_path / "model").exists()


def test_a_killed_rank_leaves_a_checkpoint_that_resume_continues(tmp_path, tiny_st, beir_dir):
    config = TrainConfig(
        output=tmp_path / "model",
        model=str(tiny_st),
        data=beir_dir,
        max_steps=8,
        batch_size=2,
        checkpoint_steps=4,
        dev=False,
        precision="fp32",
        seed=0,
        show_progress=False,
    )
    (tmp_path / "run.yaml").write_text(config.to_yaml())
    (tmp_path / "kill.py").write_text(textwrap.dedent(KILL_RANK_1_AT_STEP_6))
    killed = launch(tmp_path / "kill.py", tmp_path / "run.yaml")
    assert killed.returncode != 0 and not config.output.exists(), killed.stderr[-3000:]
    run_dir = checkpoints_dir(config.output)
    assert (run_dir / "checkpoint-4" / "trainer_state.json").is_file()

    resumed = launch("-m", "embedtune", "train", "--config", tmp_path / "run.yaml", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((config.output / "embedtune_train.json").read_text())
    assert json.loads(resumed.stdout)["steps"] == 8 and record["steps"] == 8
    assert record["resumed_from"].endswith("checkpoint-4") and not run_dir.exists()
