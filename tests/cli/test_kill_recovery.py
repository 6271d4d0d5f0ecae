"""kill -9 at several points of ``index build``, ``index add`` and ``mine``: the old state or the new,
never debris that a later run trips on; the next run succeeds and leaves nothing behind.

(Training's kills, mid-run and in the final write, are in tests/training.) Each kill runs the
command in a subprocess whose library function at the kill point is replaced by ``os.kill(SIGKILL)``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import CORPUS

from embedtune.cli import main
from embedtune.index import Index

SCRIPT = """
import os, signal, sys, torch
import importlib
torch.set_num_threads(1)
module_name, attribute = sys.argv[1].rsplit(".", 1)
owner_path, _, name = attribute.rpartition(":")
module = importlib.import_module(module_name)
owner = getattr(module, owner_path) if owner_path else module
original = getattr(owner, name)

def killed(*args, **kwargs):
    if {after}:
        original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(owner, name, killed)
from embedtune.cli import main
main(sys.argv[2:])
"""


def _kill(point: str, args: list[str], *, after: bool = False) -> None:
    script = textwrap.dedent(SCRIPT).format(after=after)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", script, point, *map(str, args)], env=env, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    ("point", "after"),
    [("embedtune.index.ingest.Ingest:add", False), ("embedtune.index.manifest.Manifest:write", False)],
    ids=["while-encoding", "before-the-manifest"],
)
def test_index_build_killed_leaves_nothing_the_next_build_trips_on(tmp_path, tiny_st, beir_dir, point, after):
    indexes = tmp_path / "indexes"
    args = ["index", "build", "-m", tiny_st, "--corpus", beir_dir, "--name", "tiny", "--indexes-dir", indexes]
    _kill(point, args, after=after)
    assert not (indexes / "tiny").exists() and any(n.startswith(".tiny.tmp-") for n in _hidden(indexes))
    _ok(args)
    assert _hidden(indexes) == [] and len(Index.load("tiny", indexes)) == len(CORPUS)
    assert oct((indexes / "tiny").stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def test_index_add_killed_keeps_the_old_index(tmp_path, tiny_st, beir_dir):
    indexes = tmp_path / "indexes"
    _ok(["index", "build", "-m", tiny_st, "--corpus", beir_dir, "--name", "tiny", "--indexes-dir", indexes])
    new = tmp_path / "new.jsonl"
    new.write_text('{"_id": "new", "text": "a brand new document about kernels"}\n')
    args = ["index", "add", "tiny", "--corpus", new, "--indexes-dir", indexes]
    _kill("embedtune.index.manifest.Manifest:write", args)  # new generation written, not committed
    assert len(Index.load("tiny", indexes)) == len(CORPUS)  # the old state, complete
    assert "1 added" in _ok(args)
    assert len(Index.load("tiny", indexes)) == len(CORPUS) + 1
    assert sorted(os.listdir(indexes / "tiny")) == ["docs.2.sqlite", "index.2.faiss", "lexical.2.npz", "manifest.json"]


@pytest.mark.parametrize(
    ("point", "after"),
    [("embedtune.mining.run:_open_output", True), ("embedtune.mining.run:plot_histograms", False)],
    ids=["writing-rows", "before-the-report-plot"],
)
def test_mine_killed_leaves_no_temporaries_after_the_next_run(tmp_path, tiny_st, beir_dir, point, after):
    output = tmp_path / "out" / "rows.jsonl.gz"
    args = ["mine", "-o", output, "--data", beir_dir, "-m", tiny_st, "--num-negatives", "1", "--overwrite"]
    args += ["--relative-margin", "none"]
    _kill(point, args, after=after)
    _ok(args)
    assert output.is_file() and _hidden(output.parent) == []
    assert oct(output.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
