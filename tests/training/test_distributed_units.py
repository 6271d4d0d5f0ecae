"""The DDP pieces that need no second process: the sliced duplicate-free sampler, the rows check and
the refusal to resume on a different number of processes."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from embedtune.errors import EmbedtuneError
from embedtune.settings import SettingError
from embedtune.training import distributed
from embedtune.training.checkpoints import check_processes
from embedtune.training.schedule import steps_per_epoch


def _rows(n: int) -> Dataset:
    texts = [f"text {i % 7}" for i in range(n)]  # duplicates: the sampler must keep twins apart
    return Dataset.from_dict({"anchor": [f"query {i}" for i in range(n)], "positive": texts})


def _sampler(rows: Dataset, batch_size: int, drop_last: bool = False):
    return distributed.batch_sampler(rows, batch_size, drop_last=drop_last, generator=torch.Generator(), seed=3)


def test_each_rank_gets_a_slice_of_the_single_process_batch_of_n_times_the_size(monkeypatch):
    rows = _rows(30)
    single = list(_sampler(rows, 4, drop_last=True))  # full batches only, as under DDP
    monkeypatch.setenv("WORLD_SIZE", "2")
    sliced = list(_sampler(rows, 2))
    assert len(_sampler(rows, 2)) % 2 == 0 and len(sliced) == 2 * len(single)
    assert [a + b for a, b in zip(sliced[::2], sliced[1::2], strict=True)] == single
    for a, b in zip(sliced[::2], sliced[1::2], strict=True):  # no text twice in a global batch
        texts = [rows[i]["positive"] for i in a + b]
        assert len(set(texts)) == len(texts)


def test_more_processes_x_batch_than_rows_is_refused(monkeypatch):
    distributed.check_rows(3, 4)  # one process: a short batch is fine
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(SettingError, match="4 processes x batch size 2 take 8 rows a step, more than the 5"):
        distributed.check_rows(5, 2)
    assert steps_per_epoch(17, 2, accumulation=1, processes=4) == 2  # only full global batches of 4 x 2


def test_a_resume_on_another_number_of_processes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_processes(tmp_path, resume=False)
    check_processes(tmp_path, resume=True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(EmbedtuneError, match="began on 2 processes and would resume on 1"):
        check_processes(tmp_path, resume=True)


def test_work_for_rank_0_runs_in_place_with_one_process():
    assert distributed.on_main(lambda: 42) == 42 and distributed.is_main() and distributed.device() is None


EXITS = """
import atexit, sys
atexit.register(lambda: print("interpreter teardown ran"))
from embedtune.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize(("args", "status"), [(["--version"], 0), (["no-such-command"], 2)])
def test_a_launched_process_ends_with_the_commands_status_and_no_interpreter_teardown(args, status):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    launched = subprocess.run(
        [sys.executable, "-c", EXITS, *args], env=env | {"WORLD_SIZE": "2"}, capture_output=True, text=True
    )
    assert launched.returncode == status and "teardown" not in launched.stdout, launched.stderr
    assert status or "version" in launched.stdout  # what was printed before the exit is flushed
    plain = subprocess.run([sys.executable, "-c", EXITS, *args], env=env, capture_output=True, text=True)
    assert plain.returncode == status and "interpreter teardown ran" in plain.stdout  # one process: untouched
