"""Where a run keeps its checkpoints, and what makes a resume continue the same run and nothing else.

Checkpoints accumulate beside the output (``<output>.checkpoints``), which itself appears only once
training is done. A resume must be the run that was killed: the same config (:meth:`TrainConfig.identity`),
the same base model (by fingerprint), the same choices (every value of the run's plan,
:class:`~embedtune.training.plan.RunPlan`, and the held-out dev queries: data changed in between
resolves differently, and is refused rather than continued as a different run), and a complete
checkpoint to continue from; a checkpoint cut short by a kill mid-save is removed rather than loaded.
Under DDP only rank 0 calls the functions that write here (:mod:`embedtune.training.distributed`); a
kill of any rank stops the run, and the newest checkpoint whose ``trainer_state.json`` was written is
the one a resume continues from.

A run that fails (a full disk, a read-only file system, any error) before its first complete
checkpoint leaves no checkpoints folder: there is nothing in it a resume could continue
(:func:`run_failures`). The libraries that save checkpoints and models hide the
``OSError`` of a full disk in errors of their own; :func:`machine_fault` finds it again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtune.errors import EarlierRunError, EmbedtuneError, machine_error
from embedtune.io import write_text_atomic
from embedtune.models import load_model, model_fingerprint
from embedtune.training.choices import Choice
from embedtune.training.config import TrainConfig
from embedtune.training.distributed import is_main, world_size

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformerTrainer

CONFIG_FILE = "train_config.yaml"
CHOICES_FILE = "choices.json"  # the plan's values and held-out dev queries, which a resume must resolve to again
CHECKPOINTS_SUFFIX = ".checkpoints"
PROCESSES_FILE = "processes"  # how many data-parallel processes the run began on


def checkpoints_dir(output: Path) -> Path:
    """Where a run keeps its checkpoints: beside the output, which only appears once training is done."""
    output = Path(output)
    return output.with_name(output.name + CHECKPOINTS_SUFFIX)


def _complete(checkpoint: Path) -> bool:
    """The Hugging Face trainer writes ``trainer_state.json`` last: a checkpoint is complete when it parses."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return False
    return True


def last_good_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that was completely written; incomplete ones (a kill mid-save) are removed.

    The Hugging Face trainer writes ``trainer_state.json`` last, so a checkpoint is complete when
    that file parses.
    """
    good: list[tuple[int, Path]] = []
    for path in run_dir.glob("checkpoint-*"):
        try:
            step = int(path.name.rsplit("-", 1)[1])
        except ValueError:
            step = None
        if step is None or not _complete(path):
            shutil.rmtree(path, ignore_errors=True)
            continue
        good.append((step, path))
    return max(good)[1] if good else None


def prepare_run_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    """Create or reopen the checkpoints folder; return it and the checkpoint to resume from."""
    run_dir = checkpoints_dir(config.output)
    saved = run_dir / CONFIG_FILE
    if config.resume:
        if not saved.is_file():
            raise EmbedtuneError(f"{run_dir}: no run to resume (start one with resume=False)")
        changed = _changed(TrainConfig.from_yaml(saved).identity(), config.identity())
        if changed:
            raise EmbedtuneError(f"{run_dir}: cannot resume a different run ({'; '.join(changed)})")
        checkpoint = last_good_checkpoint(run_dir)
        if checkpoint is None:
            raise EmbedtuneError(
                f"{run_dir}: no complete checkpoint to resume from yet (start again with overwrite=True)"
            )
        return run_dir, checkpoint
    if run_dir.exists():
        if not config.overwrite:
            raise EarlierRunError(run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    write_text_atomic(saved, config.to_yaml())
    return run_dir, None


def open_run_dir(
    config: TrainConfig, base_path: Path, choices: Mapping[str, Choice], held_out: Sequence[str]
) -> tuple[Path, Path | None, str]:
    """The checkpoints folder (created or reopened), the checkpoint to resume from and the base
    model's fingerprint, after checking that a resume continues the same run (config, model, the
    plan's ``choices`` and ``held_out`` dev queries)."""
    run_dir, checkpoint = prepare_run_dir(config)
    check_processes(run_dir, config.resume)
    fingerprint = check_base_model(config, base_path, run_dir)
    check_same_choices(run_dir, choices, held_out, config.resume)
    return run_dir, checkpoint, fingerprint


def check_same_choices(run_dir: Path, choices: Mapping[str, Choice], held_out: Sequence[str], resume: bool) -> None:
    """Record the choices beside the checkpoints; on resume, refuse when they resolve differently now.

    The held-out dev queries are part of it: a resumed run must not train on queries the first part
    of the run held out, nor pick its checkpoint on a different dev slice.
    """
    path = run_dir / CHOICES_FILE
    held_out = list(held_out)
    now = {"values": {name: choice.value for name, choice in choices.items()}, "held_out": held_out}
    if resume and path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = _changed(before["values"], now["values"])
        if before.get("held_out") != held_out:
            changed.append("the held-out dev queries")
        if changed:
            raise EmbedtuneError(
                f"{run_dir}: the data or model resolve to different choices than when the run began "
                f"({'; '.join(changed)}); start again with overwrite=True"
            )
        return
    write_text_atomic(path, json.dumps(now, indent=2) + "\n")


def _changed(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``name: before -> now`` for each value of ``now`` that ``before`` (read from the checkpoints folder) differs in.

    A checkpoint interval of None is no difference: a run begun before the plan recorded the interval
    of a run without a dev set wrote None there, and its trainer took a quarter of the steps, as the
    plan decides now.
    """
    return [
        f"{k}: {before.get(k)!r} -> {v!r}"
        for k, v in now.items()
        if before.get(k) != v and not (k == "checkpoint_steps" and before.get(k) is None)
    ]


def check_processes(run_dir: Path, resume: bool) -> None:
    """Record the number of processes; a resume must run on as many (each step's batch is N x batch_size)."""
    path, now = run_dir / PROCESSES_FILE, world_size()
    before = int(path.read_text()) if resume and path.is_file() else now
    if before != now:
        raise EmbedtuneError(
            f"{run_dir}: the run began on {before} processes and would resume on {now}, which changes each "
            f"step's batch (processes x batch_size); resume on {before} processes, or start again with overwrite=True"
        )
    write_text_atomic(path, f"{now}\n")


def check_base_model(config: TrainConfig, base_path: Path, run_dir: Path) -> str:
    """Fingerprint the base model; on resume it must be the model the checkpoints were made from."""
    fingerprint = model_fingerprint(base_path)
    marker = run_dir / "base_model.sha256"
    if config.resume and marker.is_file() and marker.read_text().strip() != fingerprint:
        raise EmbedtuneError(f"{base_path}: the checkpoints in {run_dir} were trained from a different model")
    if not marker.is_file():
        write_text_atomic(marker, fingerprint + "\n")
    return fingerprint


def restore_finished(trainer: SentenceTransformerTrainer, checkpoint: Path | None, *, best: bool) -> bool:
    """Resuming a run that was killed after its last step (while writing the output): take the
    trainer's state and the kept model (the best checkpoint when ``best``, else the last) from the
    checkpoints instead of training again. Returns whether the run was finished.

    The Hugging Face trainer, resumed from a checkpoint at the final step, runs one step more than
    the uninterrupted run did, so its weights would differ. Every process of a DDP run reads the
    same files here; none writes.
    """
    if checkpoint is None:
        return False
    from transformers import TrainerState

    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    if state.global_step < state.max_steps:
        return False
    kept = Path(state.best_model_checkpoint) if best and state.best_model_checkpoint else None
    source = kept if kept is not None and kept.is_dir() else checkpoint
    trainer.model = load_model(source, device=str(trainer.model.device))
    trainer.state = state
    return True


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder is at ``folder`` (inode and change time; None: none): a folder made anew differs."""
    try:
        stat = folder.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_ctime_ns


@contextmanager
def run_failures(config: TrainConfig) -> Iterator[None]:
    """Around a run: an error of the machine met while the trainer saves a checkpoint, which the libraries
    report in words of their own, is raised as the one line :func:`machine_fault` makes of it, naming the
    checkpoints folder; and when the run fails, the checkpoints folder it created is removed if it holds
    no complete checkpoint yet (its config, fingerprint and a checkpoint cut short are nothing a resume
    could use).

    A failed start thus leaves no debris (nor the folders made to hold it), and the next run needs no
    ``overwrite``. A folder the run did not create (an earlier run's, kept while this one was refused) and
    any folder of a ``resume`` stay.
    """
    run_dir = checkpoints_dir(config.output)
    before = _identity(run_dir)
    made = [p for p in run_dir.parents if not p.exists()]  # folders the run may create above it, deepest first
    try:
        yield
    except BaseException as e:
        # asked first: for torch.save's error, the file system is asked whether it is full
        fault = None if isinstance(e, EmbedtuneError | OSError) else machine_fault(e, run_dir)
        now = _identity(run_dir)
        ours = now is not None and now != before and not config.resume and is_main()
        if ours and not any(_complete(p) for p in run_dir.glob("checkpoint-*")):
            shutil.rmtree(run_dir, ignore_errors=True)
            for folder in made:
                try:
                    folder.rmdir()  # only while empty: never what another process has put there since
                except OSError:
                    break
        if fault is None:
            raise
        raise fault from e


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how safetensors (Rust's std::io::Error) says an errno
_TORCH_WRITE_FAILED = ("file write failed", "unexpected pos")  # torch.save's zip writer, which drops errno


def machine_fault(error: BaseException, path: str | Path) -> EmbedtuneError | None:
    """``error``, raised while writing ``path``, as the one-line error of the machine it is
    (:func:`~embedtune.errors.machine_error`), else None.

    Besides an ``OSError`` (and the :class:`EmbedtuneError` that :func:`embedtune.io.writing` made of
    one, returned as it is), this knows the errors of the libraries that save models and checkpoints:
    safetensors says the errno in its message; torch.save loses it, so the file system of ``path`` is
    asked whether it is read-only or full.
    """
    if isinstance(error, EmbedtuneError):
        return error if error.__cause__ is not None and machine_error(error.__cause__) is not None else None
    if isinstance(error, OSError):
        return machine_error(error, path)
    message = str(error)
    if found := _RUST_OS_ERROR.search(message):
        code = int(found[1])
        return machine_error(OSError(code, os.strerror(code)), path)
    if isinstance(error, RuntimeError) and any(words in message for words in _TORCH_WRITE_FAILED):
        code = _file_system_fault(Path(path))
        return machine_error(OSError(code, os.strerror(code)), path) if code is not None else None
    return None


def _file_system_fault(path: Path) -> int | None:
    """Why a write under ``path`` fails, asked of its file system: read-only, or (almost) full."""
    import errno

    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        fs = os.statvfs(path)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if fs.f_bavail * fs.f_frsize < 1 << 20:  # under 1 MiB left: what a failed write of weights means
        return errno.ENOSPC
    return None
