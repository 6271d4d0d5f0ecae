"""A kill at every file boundary of a multi-file output leaves the old set or, once its commit is finished,
the new one: never new files beside old ones, never debris (issue 31, item 6).

Each case runs the command in a process of its own that kills itself (SIGKILL, nothing cleaned up)
just before its K-th rename onto one of the output's names or its commit journal: K = 1 is before the
journal (the old set must be intact), K >= 2 after it (the next write beside the files, or a reader of
them, finishes the commit: the new set). Kill points are counted renames, not sleeps.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedtune.io import finish_commits, remove_stale_temporaries
from embedtune.mining import pairs_path, report_paths

KILL_AT_RENAME = """
import os, signal, sys
names, k = set(sys.argv[1].split(",")), int(sys.argv[2])
real, seen = os.replace, [0]

def replace(src, dst, *args, **kwargs):
    name = os.path.basename(os.fsdecode(dst))
    if name in names or ".commit-" in name:
        seen[0] += 1
        if seen[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)

os.replace = replace
from embedtune.cli import main
main(sys.argv[3:])
"""


def _killed_at(k: int, finals: list[Path], *args: object) -> subprocess.CompletedProcess:
    names = ",".join(p.name for p in finals)
    cmd = [sys.executable, "-c", KILL_AT_RENAME, names, str(k), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _debris(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _encode_set(output: Path) -> tuple[int, int]:
    ids = json.loads(output.with_name("v.ids.json").read_text())
    return len(ids), len(np.load(output))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_encode_killed_at_each_rename_keeps_vectors_and_ids_together(tmp_path, tiny_st, k):
    out = tmp_path / "out"
    out.mkdir()
    output = out / "v.npy"
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("".join(f"text number {i}\n" for i in range(3)))
    second.write_text("".join(f"other text {i}\n" for i in range(5)))
    assert _killed_at(99, [], "encode", first, "-o", output, "-m", tiny_st).returncode == 0
    finals = [output, output.with_name("v.ids.json")]

    killed = _killed_at(k, finals, "encode", second, "-o", output, "-m", tiny_st, "--overwrite")
    assert killed.returncode == -signal.SIGKILL
    if k == 1:  # before the journal: the old set, untouched
        assert _encode_set(output) == (3, 3)
    finish_commits(output)  # what the next write beside them does first
    assert _encode_set(output) == ((3, 3) if k == 1 else (5, 5))
    for final in finals:
        remove_stale_temporaries(final)
    assert _debris(out) == []


@pytest.mark.parametrize("k", [1, 2, 4])
def test_mine_killed_at_each_rename_leaves_rows_companion_and_report_of_one_run(tmp_path, beir_dir, k):
    out = tmp_path / "out"
    out.mkdir()
    mined = out / "mined.jsonl"
    # The first run keeps its short rows as plain pairs (a companion file); the second, asked for one
    # negative, finds it for every row: no companion, so the first run's goes in the same commit.
    base = ["mine", "--retriever", "bm25", "--max-rank", "8", "--max-score", "0", "--data", beir_dir, "-o", mined]
    first = [*base, "--num-negatives", "7", "--short-rows", "pair"]
    assert _killed_at(99, [], *first).returncode == 0 and pairs_path(mined).exists()
    finals = [mined, pairs_path(mined), *report_paths(mined)]

    killed = _killed_at(k, finals, *base, "--num-negatives", "1", "--overwrite")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    finish_commits(mined)  # what a reader (train) or the next write does first
    report = json.loads(report_paths(mined)[0].read_text())
    rows = [json.loads(line) for line in mined.read_text().splitlines()]
    assert report["config"]["num_negatives"] == (7 if k == 1 else 1)  # the old run's set, or the new one's
    assert {len(r["negative_ids"]) for r in rows} == {report["config"]["num_negatives"]}
    assert report["rows_written"] == len(rows) + report["rows_as_pairs"]
    assert pairs_path(mined).exists() == (report["pairs_file"] is not None)  # the companion of that same run
    for final in finals:
        remove_stale_temporaries(final)
    assert _debris(out) == []
