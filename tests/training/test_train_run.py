"""A training run users can steer and trust: resume after a kill, config files, encoders, prompts, freezing."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, run, train_config

from embedtune.errors import EmbedtuneError
from embedtune.io import name_lock
from embedtune.models import load_model
from embedtune.training import CONFIG_FILE, TRAIN_RECORD, RunRecord, TrainConfig, checkpoints_dir, train
from embedtune.training.checkpoints import CHOICES_FILE


def _config(tmp_path, model, data, name="model", **overrides) -> TrainConfig:
    settings = {"max_steps": 8, "batch_size": 2, "learning_rate": 1e-3, "warmup_ratio": 0.1, "dev": False}
    return train_config(tmp_path / name, model, data, **{**settings, "checkpoint_steps": 2, **overrides})


def config_path(config: TrainConfig, tmp_path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())
    return path


def _weights(path) -> dict[str, torch.Tensor]:
    return load_model(path, device="cpu")[0].auto_model.state_dict()


KILL_AT_SAVE = """
import os, signal, sys, torch
from transformers import TrainerCallback
from embedtune.training import TrainConfig, train
torch.set_num_threads(1)

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == {step}:
            os.kill(os.getpid(), signal.SIGKILL)

train(TrainConfig.from_yaml(sys.argv[1]), callbacks=[KillAfterSave()])
"""


def test_resume_after_kill_continues_and_matches_an_uninterrupted_run(tmp_path, tiny_st, beir_dir):
    config = _config(tmp_path, tiny_st, beir_dir)
    (tmp_path / "run.yaml").write_text(config.to_yaml())
    script = textwrap.dedent(KILL_AT_SAVE).format(step=4)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    killed = subprocess.run([sys.executable, "-c", script, tmp_path / "run.yaml"], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    run_dir = checkpoints_dir(config.output)
    assert not config.output.exists() and (run_dir / "checkpoint-4" / "trainer_state.json").is_file()
    # A kill in the middle of writing the next checkpoint leaves it without trainer_state.json.
    (run_dir / "checkpoint-6").mkdir()
    (run_dir / "checkpoint-6" / "model.safetensors").write_bytes(b"half-written")

    with pytest.raises(EmbedtuneError, match=r"earlier run \(not running now\) are there: resume=True continues it"):
        train(config)
    cli = run("train", "--config", config_path(config, tmp_path), ok=False)  # the CLI names its flags
    assert_one_line_error(
        cli, r"earlier run \(not running now\) are there: pass --resume to continue it, or --overwrite"
    )
    refused = pytest.raises(EmbedtuneError, match=r"model: another embedtune process is writing it")
    with name_lock(config.output), refused:  # a run still going holds its output's lock
        train(dataclasses.replace(config, resume=True))
    with pytest.raises(EmbedtuneError, match=r"cannot resume a different run \(learning_rate: 0.001 -> 0.002\)"):
        train(_config(tmp_path, tiny_st, beir_dir, learning_rate=2e-3, resume=True))

    resumed = train(_config(tmp_path, tiny_st, beir_dir, resume=True))
    record = json.loads((resumed.output / "embedtune_train.json").read_text())
    assert resumed.steps == 8 and record["resumed_from"].endswith("checkpoint-4")
    assert [step for step, _ in resumed.losses][-1] == 8 and not run_dir.exists()

    straight = train(_config(tmp_path, tiny_st, beir_dir, name="straight"))
    a, b = _weights(resumed.output), _weights(straight.output)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not torch.equal(
        a["encoder.layer.0.attention.self.query.weight"],
        _weights(tiny_st)["encoder.layer.0.attention.self.query.weight"],
    )


def test_a_run_without_a_dev_set_records_the_interval_it_saves_at(tmp_path, tiny_st, beir_dir):
    config = _config(tmp_path, tiny_st, beir_dir, checkpoint_steps=None, keep_checkpoints=True)  # 8 steps, no dev
    result = train(config)
    interval = result.choices["checkpoint_steps"]
    assert (interval.value, interval.source) == (2, "rule") and "4 checkpoints" in interval.why  # a quarter
    run_dir = checkpoints_dir(config.output)
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]  # saved every 2
    record = RunRecord.read(result.output)
    assert record.choices["checkpoint_steps"] == interval and record.config["checkpoint_steps"] == 2
    # A checkpoints folder begun before the interval was planned holds None for it, and still resumes.
    saved = (run_dir / CONFIG_FILE).read_text()
    assert "\ncheckpoint_steps: 2\n" in saved
    (run_dir / CONFIG_FILE).write_text(saved.replace("\ncheckpoint_steps: 2\n", "\ncheckpoint_steps: null\n"))
    choices = json.loads((run_dir / CHOICES_FILE).read_text())
    choices["values"]["checkpoint_steps"] = None
    (run_dir / CHOICES_FILE).write_text(json.dumps(choices))
    resumed = train(dataclasses.replace(config, resume=True))
    assert resumed.steps == 8 and RunRecord.read(resumed.output).resumed_from.endswith("checkpoint-8")


def test_resume_without_checkpoints_is_refused(tmp_path, tiny_st, beir_dir):
    with pytest.raises(EmbedtuneError, match="no run to resume"):
        train(_config(tmp_path, tiny_st, beir_dir, resume=True))


def test_yaml_config_with_overrides_is_saved_resolved(tmp_path, tiny_st, beir_dir):
    path = tmp_path / "run.yaml"
    path.write_text(f"output: {tmp_path / 'm'}\nmodel: {tiny_st}\ndata: {beir_dir}\nmax_steps: 3\nbatch_size: 2\n")
    config = TrainConfig.from_yaml(path, learning_rate=3e-4, show_progress=False)
    assert config.max_steps == 3 and config.learning_rate == 3e-4 and config.loss == "auto"
    result = train(config)
    saved = TrainConfig.from_yaml(result.output / CONFIG_FILE).identity()
    assert {k: saved[k] for k, v in config.identity().items() if v is not None} == {
        k: v for k, v in config.identity().items() if v is not None
    }
    assert None not in (saved["epochs"], saved["warmup_ratio"], saved["temperature"])  # the schedule, resolved
    path.write_text("output: x\nlearning_rat: 1\n")
    with pytest.raises(EmbedtuneError, match=r"run\.yaml: unknown setting 'learning_rat'"):
        TrainConfig.from_yaml(path)


def test_dev_evaluation_keeps_the_best_checkpoint_and_writes_the_report(tmp_path, tiny_st, beir_dir):
    result = train(_config(tmp_path, tiny_st, beir_dir, dev=True, max_steps=6, metric="mrr@10"))
    assert result.metric == "eval_dev_cosine_mrr@10"
    assert "eval_dev_cosine_mrr@10" in result.dev_before and "eval_dev_cosine_mrr@10" in result.dev_after
    rows = [json.loads(line) for line in (result.output / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and "eval_dev_cosine_mrr@10" in rows[0]
    assert [r["step"] for r in rows if "eval_dev_cosine_mrr@10" in r] == [0, 2, 4, 6]
    best = max(r["eval_dev_cosine_mrr@10"] for r in rows[1:] if "eval_dev_cosine_mrr@10" in r)
    assert result.dev_after["eval_dev_cosine_mrr@10"] == pytest.approx(best)
    card = (result.output / "README.md").read_text()
    assert "| mrr@10 |" in card and "| learning_rate | 0.001 |" in card and "training.png" in card
    assert (result.output / "training.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("arch", ["roberta", "distilbert", "mpnet"])
def test_hugging_face_encoders_get_pooling_and_train(tmp_path, tiny_bert, beir_dir, arch):
    import shutil

    from transformers import AutoConfig, AutoModel

    path = tmp_path / arch
    shutil.copytree(tiny_bert, path, ignore=shutil.ignore_patterns("config.json", "model.safetensors"))
    vocab = sum(1 for _ in (path / "vocab.txt").open(encoding="utf-8"))
    sizes = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, max_position_embeddings=130)
    if arch == "distilbert":
        sizes = dict(dim=32, n_heads=2, n_layers=2, hidden_dim=64, max_position_embeddings=130)
    else:
        sizes["num_hidden_layers"] = 2
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(arch, vocab_size=vocab, pad_token_id=0, **sizes)).save_pretrained(path)
    result = train(_config(tmp_path, path, beir_dir, max_steps=2, pooling="cls", freeze_layers=1, max_seq_length=64))
    modules = json.loads((result.output / "modules.json").read_text())
    pooling = json.loads((result.output / modules[1]["path"] / "config.json").read_text())
    assert pooling["pooling_mode"] == "cls"
    assert load_model(result.output, device="cpu").encode(["web server"]).shape == (1, 32)


def test_freezing_keeps_the_frozen_weights(tmp_path, tiny_st, beir_dir):
    result = train(_config(tmp_path, tiny_st, beir_dir, max_steps=3, freeze_embeddings=True, freeze_layers=1))
    before, after = _weights(tiny_st), _weights(result.output)
    assert torch.equal(before["embeddings.word_embeddings.weight"], after["embeddings.word_embeddings.weight"])
    assert torch.equal(before["encoder.layer.0.output.dense.weight"], after["encoder.layer.0.output.dense.weight"])
    assert not torch.equal(before["encoder.layer.1.output.dense.weight"], after["encoder.layer.1.output.dense.weight"])
    with pytest.raises(EmbedtuneError, match="cannot freeze 5 layers: the model has 2"):
        train(_config(tmp_path, tiny_st, beir_dir, name="x", freeze_layers=5))


def test_prompts_are_used_in_training_and_saved(tmp_path, tiny_st, beir_dir):
    result = train(
        _config(tmp_path, tiny_st, beir_dir, max_steps=2, query_prompt="query: ", document_prompt="passage: ")
    )
    model = load_model(result.output, device="cpu")
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    # Index build, search and eval encode through Encoder, which applies the prompt of each role.
    from embedtune.encoding import Encoder

    encoder = Encoder(model, "fp32")
    prompted = encoder.encode(["web server"], prompt_name="query", show_progress=False)
    assert prompted == pytest.approx(encoder.encode(["query: web server"], show_progress=False), abs=1e-6)
    assert prompted != pytest.approx(encoder.encode(["web server"], show_progress=False), abs=1e-3)


def test_early_stopping_ends_the_run_when_the_dev_metric_stalls(tmp_path, tiny_st, beir_dir):
    # With a zero learning rate the dev metric cannot improve: patience 1 stops at the second evaluation.
    result = train(_config(tmp_path, tiny_st, beir_dir, dev=True, learning_rate=0.0, early_stopping_patience=1))
    assert result.steps == 4


def test_report_to_tensorboard_writes_event_files_into_the_model_folder(tmp_path, tiny_st, beir_dir):
    pytest.importorskip("tensorboardX")
    reader = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )  # the viewer the extra installs
    result = train(_config(tmp_path, tiny_st, beir_dir, max_steps=2, report_to="tensorboard"))
    events = list((result.output / "runs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    scalars = reader.EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert any("loss" in tag for tag in scalars), scalars  # what `tensorboard --logdir` shows


def test_a_missing_tracker_package_is_refused_before_loading(tmp_path, tiny_st, beir_dir, monkeypatch):
    import importlib.util

    from embedtune.settings import SettingError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SettingError, match=r"^report_to: 'wandb' needs the wandb package"):
        train(_config(tmp_path, tiny_st, beir_dir, report_to="wandb"))


def test_the_run_says_a_whole_run_eta_and_records_where_its_time_went(tmp_path, tiny_st, beir_dir):
    lines: list[str] = []
    result = train(_config(tmp_path, tiny_st, beir_dir, dev=True), log=lines.append)
    assert any(line.startswith("step ") and "whole run about" in line and "left" in line for line in lines)
    assert any(line.startswith("precision: fp32") or line.startswith("precision: bf16") for line in lines)
    record = json.loads((result.output / TRAIN_RECORD).read_text())
    stages = ("setup", "baseline", "training", "dev evaluations")
    assert all(record["timings"][s] >= 0 for s in stages) and record["timings"]["total"] > 0
    assert set(result.timings) >= {*stages, "writing", "total"}
    assert [p["step"] for p in record["dev_curve"]] == [2, 4, 6, 8]  # the interval given (2) is kept
    assert all(p["seconds"] > 0 and 0 <= p["metric"] <= 1 for p in record["dev_curve"])
    assert record["dev_evaluations"] == 5  # the baseline and four


def test_the_model_files_follow_the_umask(tmp_path, tiny_st, beir_dir):
    """safetensors writes its weights 0600: a model meant for another user (a service) must be readable."""
    old = os.umask(0o022)
    try:
        result = train(_config(tmp_path, tiny_st, beir_dir, max_steps=1))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in result.output.rglob("*") if p.is_file()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}
