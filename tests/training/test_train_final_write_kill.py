"""A kill while the trained model is being written: resume writes the same model, runs no extra step,
and removes the killed run's temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

from embedtune.models import load_model
from embedtune.training import TrainConfig, checkpoints_dir, train

KILL_IN_FINAL_WRITE = """
import os, signal, sys, torch
import embedtune.training.run as run
from embedtune.training import TrainConfig, train
torch.set_num_threads(1)

def killed(*args, **kwargs):  # called inside the output's temporary folder, after the model is saved there
    os.kill(os.getpid(), signal.SIGKILL)

run.write_run_report = killed
train(TrainConfig.from_yaml(sys.argv[1]))
"""


def _config(tmp_path, model, data, name, **overrides) -> TrainConfig:
    options = dict(
        output=tmp_path / name,
        model=str(model),
        data=data,
        max_steps=8,
        batch_size=2,
        learning_rate=1e-3,
        lr_scheduler="constant",
        seed=0,
        dev=False,
        checkpoint_steps=4,
        show_progress=False,
    )
    return TrainConfig(**{**options, **overrides})


def test_resume_after_a_kill_in_the_final_write_matches_the_uninterrupted_run(tmp_path, tiny_st, beir_dir):
    config = _config(tmp_path, tiny_st, beir_dir, "model")
    (tmp_path / "run.yaml").write_text(config.to_yaml())
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    script = textwrap.dedent(KILL_IN_FINAL_WRITE)
    killed = subprocess.run([sys.executable, "-c", script, tmp_path / "run.yaml"], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    debris = [p for p in tmp_path.iterdir() if p.name.startswith(".model.tmp-")]
    assert debris and not config.output.exists()
    assert (checkpoints_dir(config.output) / "checkpoint-8" / "trainer_state.json").is_file()

    resumed = train(_config(tmp_path, tiny_st, beir_dir, "model", resume=True))
    record = json.loads((resumed.output / "embedtune_train.json").read_text())
    assert resumed.steps == 8 and record["steps"] == 8 and record["resumed_from"].endswith("checkpoint-8")
    assert not any(p.name.startswith(".model.") for p in tmp_path.iterdir()), sorted(os.listdir(tmp_path))
    assert oct(resumed.output.stat().st_mode & 0o777) == oct(0o777 & ~_umask())

    straight = train(_config(tmp_path, tiny_st, beir_dir, "straight"))
    a = load_model(resumed.output, device="cpu")[0].auto_model.state_dict()
    b = load_model(straight.output, device="cpu")[0].auto_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
