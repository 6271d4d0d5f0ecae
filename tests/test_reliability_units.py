"""Unit checks of the reliability helpers: terminal-safe text, stale temporaries, locks, umask,
index names, impossible scores, id files and the default dev split."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from embedtune.data import read_id_file
from embedtune.errors import DataError, EmbedtuneError, EmbedtuneWarning
from embedtune.index import Index, build_index
from embedtune.index.manifest import check_index_name
from embedtune.io import (
    atomic_directory,
    atomic_file,
    check_writable,
    exchange_paths,
    make_temp_dir,
    name_lock,
    remove_stale_temporaries,
)
from embedtune.text import terminal_safe


def test_terminal_safe_escapes_control_sequences_and_keeps_every_script():
    assert terminal_safe("ok é 中") == "ok é 中"
    assert terminal_safe("a\x1b[2Jb\x07\r\u202e\ud800") == "a\\x1b[2Jb\\x07\\r\\u202e\\ud800"


def test_stale_temporaries_of_dead_writers_go_and_live_ones_stay(tmp_path):
    target = tmp_path / "out"
    mine = make_temp_dir(target)  # this process: alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / mine.name.replace(f"-{os.getpid()}-", f"-{dead.stdout.strip()}-")
    stale.mkdir()
    (tmp_path / ".out.tmp-legacy8ch").mkdir()  # no owner recorded: left alone
    (tmp_path / ".outer.tmp-x").mkdir()  # another output's
    assert remove_stale_temporaries(target) == [stale]
    assert mine.is_dir() and (tmp_path / ".out.tmp-legacy8ch").is_dir()
    assert oct(mine.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def test_an_old_version_left_only_under_its_temporary_name_is_put_back(tmp_path):
    """A replacement killed between its two renames (issue 31, item 14): the next write restores, not deletes."""
    target = tmp_path / "model"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    old = make_temp_dir(target, "old")
    kept = tmp_path / old.name.replace(f"-{os.getpid()}-", f"-{dead.stdout.strip()}-")
    old.rename(kept)
    (kept / "model").mkdir()
    (kept / "model" / "weights").write_text("the previous model")
    with atomic_directory(target, overwrite=True) as tmp:
        assert (target / "weights").read_text() == "the previous model"  # back before anything else happens
        (tmp / "weights").write_text("the new model")
    assert (target / "weights").read_text() == "the new model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_replacing_a_folder_exchanges_the_two_in_one_step(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    (first / "x").write_text("1"), (second / "x").write_text("2")
    assert exchange_paths(first, second)  # Linux with renameat2: CI's machines
    assert ((first / "x").read_text(), (second / "x").read_text()) == ("2", "1")
    with pytest.raises(FileNotFoundError):
        exchange_paths(first, tmp_path / "missing")


def test_atomic_file_gets_the_umask_mode(tmp_path):
    with atomic_file(tmp_path / "f.txt") as tmp:
        tmp.write_text("x")
    assert oct((tmp_path / "f.txt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_name_lock_refuses_a_second_writer_and_leaves_no_file(tmp_path):
    busy = pytest.raises(EmbedtuneError, match="another embedtune process is writing it")
    with name_lock(tmp_path / "x"), busy, name_lock(tmp_path / "x"):
        pass
    assert os.listdir(tmp_path) == []


def test_concurrent_build_of_one_name_fails_at_the_start(tmp_path, tiny_st, beir_dir):
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    busy = pytest.raises(EmbedtuneError, match="another embedtune process")
    with name_lock(indexes / "tiny"), busy:
        build_index(beir_dir, "tiny", model=tiny_st, indexes_dir=indexes)
    assert os.listdir(indexes) == []


def test_check_writable(tmp_path):
    (tmp_path / "f").write_text("x")
    check_writable(tmp_path / "new" / "deeper" / "out.json")
    with pytest.raises(EmbedtuneError, match="f is a file"):
        check_writable(tmp_path / "f" / "out.json")
    with pytest.raises(EmbedtuneError, match="is not a folder"):
        check_writable(tmp_path / "f", directory=True)


@pytest.mark.parametrize("name", ["", "  ", "../escaped", "a/b", ".hidden", "tab\tname", "x" * 201])
def test_bad_index_names_are_refused(name):
    with pytest.raises(EmbedtuneError, match="index name"):
        check_index_name(name)


def test_impossible_scores_are_refused(tmp_path, tiny_st, beir_dir):
    build_index(beir_dir, "tiny", model=tiny_st, indexes_dir=tmp_path, show_progress=False)
    index = Index.load("tiny", tmp_path)
    real_search = index.faiss_index.search

    def damaged(vectors, k, params=None):
        scores, fids = real_search(vectors, k, params=params)
        scores[0, 0] = 7.1e36
        return scores, fids

    index.faiss_index = type("Damaged", (), {"search": staticmethod(damaged)})()
    with pytest.raises(EmbedtuneError, match=r"score 7\.1e\+36, impossible for normalised vectors"):
        index.search_vectors(np.ones((1, index.manifest.dimension), dtype=np.float32), 3)


def test_id_file_is_read_with_located_errors(tmp_path):
    (tmp_path / "ids.txt").write_bytes(b"\xef\xbb\xbfa\n\nb\n")
    assert read_id_file(tmp_path / "ids.txt") == ["a", "b"]  # BOM dropped, blanks skipped
    (tmp_path / "bad.txt").write_bytes(b"a\n\xff\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: invalid UTF-8"):
        read_id_file(tmp_path / "bad.txt")


def test_a_missing_default_dev_split_is_a_warning(tmp_path, tiny_st, beir_dir):
    from embedtune.training import TrainConfig
    from embedtune.training.dev import build_dev_evaluator
    from embedtune.training_data import load_training_data

    (beir_dir / "qrels" / "dev.tsv").unlink()
    config = TrainConfig(output=tmp_path / "m", model=str(tiny_st), data=beir_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build_dev_evaluator(config.dev_settings(), load_training_data(beir_dir), "fp32") is None
    assert any(issubclass(w.category, EmbedtuneWarning) and "no 'dev' split" in str(w.message) for w in caught)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
