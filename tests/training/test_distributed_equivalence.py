"""2 processes x batch 2 train like 1 process x batch 4: on the first optimiser step both see the same
rows, the same loss (in-batch negatives gathered across the processes) and the same gradients."""

from __future__ import annotations

import json
import shutil
import textwrap

import torch
from helpers import launch, train_config

from embedtune.training import train

# Dumps the first step's logged loss and the gradients the optimiser is about to apply (after DDP's
# all-reduce), from rank 0 only.
DUMP = """
import json, os, sys, torch
from transformers import TrainerCallback

class Dump(TrainerCallback):
    def __init__(self, folder):
        self.folder = folder

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if os.environ.get("RANK", "0") == "0":
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            torch.save(grads, os.path.join(self.folder, "grads.pt"))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if os.environ.get("RANK", "0") == "0" and "loss" in logs and state.global_step == 1:
            with open(os.path.join(self.folder, "loss.json"), "w") as f:
                json.dump(logs["loss"], f)

if __name__ == "__main__":
    from embedtune.training import TrainConfig, train
    train(TrainConfig.from_yaml(sys.argv[1]), callbacks=[Dump(sys.argv[2])])
"""
PAIRS = [
    ("web server", "nginx is a small web server"),
    ("text editor", "vim is a text editor for programmers"),
    ("compression", "gzip compresses files"),
    ("puzzle game", "a falling blocks puzzle game"),
    ("secure shell", "openssh is a secure shell client"),
    ("programming language", "python is a programming language"),
    ("sql database", "postgresql is an sql database server"),
    ("mail server", "postfix is a mail transfer agent"),
]


def test_one_step_on_two_processes_equals_one_process_with_the_doubled_batch(tmp_path, tiny_bert):
    model = tmp_path / "bert"  # the tiny BERT without dropout: the two set-ups draw different dropout masks
    shutil.copytree(tiny_bert, model)
    config = json.loads((model / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (model / "config.json").write_text(json.dumps(config))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in PAIRS))
    (tmp_path / "dump.py").write_text(textwrap.dedent(DUMP))
    settings = dict(max_steps=1, dev=False, precision="fp32", lr_scheduler="constant", max_seq_length=32)

    two = tmp_path / "two"
    two.mkdir()
    (tmp_path / "two.yaml").write_text(train_config(two / "model", model, data, batch_size=2, **settings).to_yaml())
    done = launch(tmp_path / "dump.py", tmp_path / "two.yaml", two)
    assert done.returncode == 0, done.stderr[-3000:]

    one = tmp_path / "one"
    one.mkdir()
    import importlib.util

    spec = importlib.util.spec_from_file_location("dump", tmp_path / "dump.py")
    dump = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dump)
    train(train_config(one / "model", model, data, batch_size=4, **settings), callbacks=[dump.Dump(str(one))])

    loss_two, loss_one = (json.loads((d / "loss.json").read_text()) for d in (two, one))
    assert abs(loss_two - loss_one) <= 1e-5 * abs(loss_one), (loss_two, loss_one)
    grads_two, grads_one = (torch.load(d / "grads.pt") for d in (two, one))
    assert grads_two.keys() == grads_one.keys() and len(grads_one) > 10
    for name, grad in grads_one.items():
        assert torch.allclose(grads_two[name], grad, rtol=1e-4, atol=1e-7), name
    assert any(grad.abs().sum() > 0 for grad in grads_one.values())
