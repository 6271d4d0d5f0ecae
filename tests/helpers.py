"""Shared test data: a small corpus where each query has an obvious answer, and a BEIR writer.

Tests import these from here (``from helpers import CORPUS``), never from ``conftest``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# A small corpus where each query has an obvious answer, plus one query with two relevant documents.
CORPUS = {
    "nginx": "nginx is a small, powerful and scalable web server and reverse proxy.",
    "vim": "Vim is an almost compatible version of the UNIX editor Vi, a text editor for programmers.",
    "gzip": "gzip compresses and decompresses files using Lempel-Ziv coding (LZ77).",
    "tetris": "A falling blocks puzzle game in the terminal, a clone of Tetris.",
    "openssh": "OpenSSH is a secure shell client for remote login to another machine over the network.",
    "openssh-doc": "Documentation for OpenSSH, the secure shell client and server.",
    "python3": "Python is an interactive high-level object-oriented programming language.",
    "postgres": "PostgreSQL is a fully featured object-relational SQL database server.",
}
QUERIES = {
    "q-web": "web server",
    "q-edit": "text editor",
    "q-zip": "compression utility",
    "q-game": "puzzle game",
    "q-ssh": "secure shell",
    "q-py": "programming language",
    "q-db": "SQL database",
}
QRELS = {
    "train": [("q-web", "nginx"), ("q-edit", "vim"), ("q-zip", "gzip"), ("q-game", "tetris"), ("q-py", "python3")],
    "dev": [("q-db", "postgres")],
    "test": [("q-ssh", "openssh"), ("q-ssh", "openssh-doc"), ("q-db", "postgres")],
}


def write_beir(root: Path, corpus=CORPUS, queries=QUERIES, qrels=QRELS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with (root / "corpus.jsonl").open("w") as f:
        for doc_id, text in corpus.items():
            f.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t1" for q, d in rows)]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def run(*args: object, ok: bool = True, input: str | None = None):
    """``embedtune ARGS`` through click's runner; with ``ok``, a non-zero exit fails the test."""
    from click.testing import CliRunner

    from embedtune.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], input=input)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def assert_one_line_error(result, pattern: str) -> None:
    """A non-zero exit with exactly one ``Error:`` line matching ``pattern``, and no traceback."""
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.output
    assert "Traceback" not in result.output


def train_config(output: Path, model: object, data: object, **settings: object):
    """A seeded, quiet TrainConfig for the tiny models; each test adds the settings it varies."""
    from embedtune.training import TrainConfig

    base = {"output": output, "model": str(model), "data": data, "seed": 0, "warmup_ratio": 0.0, "show_progress": False}
    return TrainConfig(**{**base, **settings})


# A commit hash: the snapshot folder of a hand-made Hugging Face cache.
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hf_cache(root: Path, repo_id: str, model_dir: Path) -> Path:
    """A Hugging Face hub cache laid out by hand: blobs, a snapshot of symlinks and refs/main."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    for file in (p for p in model_dir.rglob("*") if p.is_file()):
        rel = file.relative_to(model_dir)
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()  # blobs are named by content
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, blob)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def launch(*args: object, launcher: str = "torchrun", processes: int = 2, timeout: float = 300):
    """``torchrun`` or ``accelerate launch`` of ``ARGS`` on PROCESSES local processes with this checkout's
    embedtune, one thread each; returns the finished process (stdout and stderr as text)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = {
        "torchrun": ["torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"],
        # --multi_gpu is accelerate's word for multi-process DDP; without GPUs it runs gloo on the CPU
        "accelerate": ["accelerate.commands.launch", "--multi_gpu", f"--num_processes={processes}"],
    }[launcher]
    if launcher == "accelerate":  # a free port; no questions about precision or compilation
        command += ["--main_process_port=0", "--mixed_precision=no", "--dynamo_backend=no"]
    return subprocess.run(
        [sys.executable, "-m", *command, *(str(a) for a in args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mount_tmpfs(path: Path, *, size: str = "1m") -> Path:
    """A small tmpfs mounted on ``path`` (a real device that fills up or turns read-only, which chmod cannot
    fake for root); the test is skipped, saying why, where mounting is not permitted. Unmount it with
    :func:`unmount`."""
    import shutil
    import subprocess

    import pytest

    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: a full or read-only disk needs a tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.decode().strip()}); needs root")
    return path


def remount(path: Path, *, read_only: bool) -> None:
    """Make the tmpfs at ``path`` read-only (or writable again)."""
    import subprocess

    subprocess.run(["mount", "-o", f"remount,{'ro' if read_only else 'rw'}", str(path)], check=True)


def unmount(path: Path) -> None:
    """Lazily: a file a test left open must not fail the test's clean-up."""
    import subprocess

    subprocess.run(["umount", "-l", str(path)], check=False)


def fill(device: Path, *, leave: int = 0) -> Path:
    """Fill the file system of folder ``device`` with one file, leaving about ``leave`` bytes (whole pages) free."""
    import os

    filler = device / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:  # ENOSPC: the device is full
        pass
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler


def resize(path: Path, size: str) -> None:
    """Give the tmpfs at ``path`` another size (room freed, as a user would free it)."""
    import subprocess

    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)
