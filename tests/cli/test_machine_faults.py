"""Faults of the machine and messages that must say what is true (issue 31).

A full disk, a read-only file system or a denied permission is reported like bad input: one line
naming the path and what to do, the JSON error object under --json, exit status 1, no traceback,
no debris, and the previous output intact. The disks are real: a tiny tmpfs, filled or remounted
read-only (chmod cannot stop root, which CI runs as); where mounting is not permitted these tests
are skipped, saying so.
"""

from __future__ import annotations

import bz2
import json
import lzma
from pathlib import Path

import pytest
from helpers import CORPUS, assert_one_line_error, fill, mount_tmpfs, remount, resize, run, unmount, write_beir


@pytest.fixture
def disk(tmp_path):
    """A 1 MiB tmpfs, unmounted after the test."""
    path = mount_tmpfs(tmp_path / "disk", size="1m")
    try:
        yield path
    finally:
        unmount(path)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporaries and lock files included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _json_error(result) -> dict:
    """The error object on the last line of stdout (a command may have printed its results before)."""
    error = json.loads(result.stdout.strip().splitlines()[-1])
    assert error["schema"] == "embedtune.error/1" and error["exit_code"] == 1, error
    return error


def _refused_for_space(result, path: Path) -> None:
    assert result.exit_code == 1, result.output
    assert_one_line_error(result, rf"{path}: cannot be written \(No space left on device\): free space on the device")
    assert "No space left" in _json_error(result)["error"]


# -- full disk (ENOSPC) ------------------------------------------------------------------------------


def test_index_build_on_a_full_disk_is_one_line_and_keeps_the_previous_index(disk, tiny_st, beir_dir):
    build = ["index", "build", "-m", tiny_st, "--corpus", beir_dir, "--indexes-dir", disk]
    run(*build, "--name", "t")
    fill(disk)
    before = _files(disk)

    result = run(*build, "--name", "t", "--overwrite", "--json", ok=False)
    _refused_for_space(result, disk / "t")
    result = run(*build, "--name", "fresh", "--json", ok=False)  # a new index: its temporary folder goes too
    _refused_for_space(result, disk / "fresh")

    assert _files(disk) == before  # no new generation, lock file or temporary folder left behind
    (disk / "filler").unlink()
    assert "top 1 of 8 documents" in run("search", "web server", "-k", 1, "--index", "t", "--indexes-dir", disk).output


def test_encode_on_a_full_disk_keeps_the_previous_vectors_and_ids_together(disk, tmp_path, tiny_st):
    first, second = tmp_path / "first.txt", tmp_path / "second.jsonl"
    first.write_text("".join(f"text number {i}\n" for i in range(300)))
    second.write_text("".join(json.dumps({"_id": f"x{i}", "text": f"other text {i}"}) + "\n" for i in range(300)))
    output = disk / "v.npy"
    run("encode", first, "-o", output, "-m", tiny_st)
    fill(disk, leave=8192)  # room for the new ids (one page), not for 300 new vectors
    before = _files(disk)

    result = run("encode", second, "-o", output, "-m", tiny_st, "--overwrite", "--json", ok=False)
    _refused_for_space(result, output)
    assert _files(disk) == before  # old ids beside old vectors: no new ids file, no temporaries


def test_eval_on_a_full_disk_keeps_the_previous_report(disk, beir_dir):
    report = disk / "eval.json"
    run("eval", "--bm25", "--data", beir_dir, "--json-out", report)
    fill(disk)
    before = _files(disk)

    result = run("eval", "--bm25", "--data", beir_dir, "--json-out", report, "--overwrite", "--json", ok=False)
    _refused_for_space(result, report)
    result = run("eval", "--bm25", "--data", beir_dir, "--markdown-out", disk / "new.md", "--json", ok=False)
    _refused_for_space(result, disk / "new.md")
    assert _files(disk) == before


# -- read-only file system (EROFS) ---------------------------------------------------------------


def test_index_add_and_remove_on_a_read_only_file_system_say_cannot_be_written(disk, tiny_st, beir_dir, tmp_path):
    run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--indexes-dir", disk, "--name", "t")
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"_id": "new", "text": "a new document"}) + "\n")
    before = _files(disk)
    remount(disk, read_only=True)
    try:
        added = run("index", "add", "t", "--corpus", new, "--indexes-dir", disk, "--json", ok=False)
        assert_one_line_error(added, rf"{disk / 't'}: cannot be written \(.*read-only file system\)")
        _json_error(added)
        removed = run("index", "remove", "t", "vim", "--indexes-dir", disk, ok=False)
        assert_one_line_error(removed, rf"{disk / 't'}: cannot be written \(.*read-only file system\)")
    finally:
        remount(disk, read_only=False)
    assert _files(disk) == before


def test_an_error_of_the_machine_outside_the_writers_is_one_line_too(disk, monkeypatch):
    """The CLI's one catch: an OSError no library writer named (here: deleting from a read-only cache)."""
    monkeypatch.setenv("EMBEDTUNE_CACHE", str(disk))
    (disk / "0123.sqlite").write_bytes(b"not really a vector space")
    remount(disk, read_only=True)
    try:
        result = run("cache", "clear", "--yes", "--json", ok=False)
    finally:
        remount(disk, read_only=False)
    assert_one_line_error(result, r"0123\.sqlite: cannot be written \(Read-only file system\): write elsewhere")
    _json_error(result)


# -- messages that say what is true ------------------------------------------------------------------


def test_conflicting_grades_of_one_qrels_pair_are_a_located_error(beir_dir):
    qrels = beir_dir / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq-ssh\topenssh\t1\nq-db\tpostgres\t1\nq-ssh\topenssh\t2\n")
    result = run("eval", "--bm25", "--data", beir_dir, ok=False)
    assert_one_line_error(
        result, r"test\.tsv:4: field 'score': query 'q-ssh' and document 'openssh' graded 2 here but 1 at line 2"
    )
    qrels.write_text("query-id\tcorpus-id\tscore\nq-ssh\topenssh\t1\nq-ssh\topenssh\t1\n")  # the same grade twice
    run("eval", "--bm25", "--data", beir_dir)


@pytest.mark.parametrize(
    ("suffix", "compress", "name", "command"),
    [
        (".zst", lambda data: b"\x28\xb5\x2f\xfd" + b"\x00\x58\x61\x00" + data, "zstd", "zstd -d"),  # a zstd frame
        (".xz", lzma.compress, "xz", "xz -d"),
        (".bz2", bz2.compress, "bzip2", "bzip2 -d"),
    ],
    ids=["zstd", "xz", "bzip2"],
)
def test_a_corpus_compressed_other_than_gzip_is_named_as_such(tmp_path, tiny_st, suffix, compress, name, command):
    corpus = tmp_path / f"corpus.jsonl{suffix}"
    corpus.write_bytes(
        compress(b"".join(json.dumps({"_id": k, "text": v}).encode() + b"\n" for k, v in CORPUS.items()))
    )
    result = run("index", "build", "-m", tiny_st, "--corpus", corpus, "--indexes-dir", tmp_path / "idx", ok=False)
    assert_one_line_error(
        result,
        rf"corpus\.jsonl{suffix}: compressed with {name}, which embedtune does not read: decompress it "
        rf"\({command} .*corpus\.jsonl{suffix}\) or give corpus\.jsonl or corpus\.jsonl\.gz",
    )


def test_a_qrels_file_that_is_a_folder_is_called_a_folder(tmp_path):
    data = write_beir(tmp_path / "beir")
    (data / "qrels" / "test.tsv").unlink()
    (data / "qrels" / "test.tsv").mkdir()
    result = run("eval", "--bm25", "--data", data, ok=False)
    assert_one_line_error(result, r"test\.tsv: a folder, not a qrels file")


@pytest.mark.parametrize("command", [["cache", "info"], ["cache", "clear", "--yes"]])
def test_an_encoding_cache_that_is_a_file_is_an_error(tmp_path, monkeypatch, command):
    cache = tmp_path / "cache-file"
    cache.write_text("not a folder\n")
    monkeypatch.setenv("EMBEDTUNE_CACHE", str(cache))
    result = run(*command, "--json", ok=False)
    assert_one_line_error(result, rf"{cache} \(\$EMBEDTUNE_CACHE\): a file, not a folder")
    _json_error(result)
    assert cache.read_text() == "not a folder\n"


def test_index_info_says_what_is_true_after_removes_and_adds(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--indexes-dir", idx, "--name", "t")
    run("index", "remove", "t", *CORPUS, "--indexes-dir", idx)
    info = run("index", "info", "t", "--indexes-dir", idx).output
    assert "bm25: empty (every document removed)" in info and "built without bm25" not in info
    assert "8 vectors x 32 dims" in info and "since then 0 added and 8 removed in 1 update(s), 0 now" in info
    assert "top 0 of 0 documents" in run("search", "web", "--mode", "bm25", "--index", "t", "--indexes-dir", idx).output

    run("index", "add", "t", "--corpus", beir_dir, "--indexes-dir", idx)  # the BM25 side comes back with them
    info = run("index", "info", "t", "--indexes-dir", idx).output
    assert "bm25: 59 terms" in info or ("bm25:" in info and "terms, k1=1.2" in info), info
    assert "since then 8 added and 8 removed in 2 update(s), 8 now" in info
    hits = run("search", "web server", "--mode", "bm25", "-k", 1, "--index", "t", "--indexes-dir", idx).output
    assert "nginx" in hits


# -- item 7: a model is checked for its role where it is loaded ------------------------------------------


def test_a_cross_encoder_is_refused_as_the_embedder_by_index_build_and_train(tmp_path, tiny_cross_encoder, beir_dir):
    indexes = tmp_path / "idx"
    result = run("index", "build", "-m", tiny_cross_encoder, "--corpus", beir_dir, "--indexes-dir", indexes, ok=False)
    assert_one_line_error(result, r"a sentence-transformers CrossEncoder, not a sentence embedder")
    assert not indexes.exists() or not any(indexes.iterdir())
    result = run("train", "-m", tiny_cross_encoder, "--data", beir_dir, "-o", tmp_path / "m", ok=False)
    assert_one_line_error(result, r"a sentence-transformers CrossEncoder, not a sentence embedder")
    assert not (tmp_path / "m").exists()


# -- train, mine and split on a full or read-only disk -----------------------------------------------


@pytest.fixture
def sized_disk(tmp_path, request):
    """A tmpfs of the size the test is parametrized with (``indirect``), unmounted after the test."""
    path = mount_tmpfs(tmp_path / "disk", size=request.param)
    try:
        yield path
    finally:
        unmount(path)


def _train(tiny_st, beir_dir, output, *more):
    """A one-step train without dev evaluation: seconds on the tiny model."""
    return (
        "train",
        "-m",
        tiny_st,
        "--data",
        beir_dir,
        "-o",
        output,
        "--max-steps",
        1,
        "--batch-size",
        4,
        "--no-dev",
        *more,
    )


def test_train_on_a_full_disk_is_one_line_and_leaves_no_checkpoints_folder(disk, tiny_st, beir_dir):
    fill(disk)
    result = run(*_train(tiny_st, beir_dir, disk / "models" / "m", "--json"), ok=False)
    assert result.exit_code == 1, result.output
    assert_one_line_error(
        result, rf"{disk / 'models' / 'm.checkpoints'}\S*: cannot be written \(No space left on device\): free space"
    )
    assert "No space left" in _json_error(result)["error"]
    assert [p.name for p in disk.iterdir()] == ["filler"]  # no m.checkpoints (nothing to resume), nor models/


@pytest.mark.parametrize(
    "sized_disk",
    ["1m", "6m"],  # room for the run's set-up files; then for none of the weights, or for them and not the optimizer's
    ids=["model-weights", "optimizer-state"],  # what fills it: safetensors and torch.save, which both hide the errno
    indirect=True,
)
def test_train_whose_first_checkpoint_fills_the_disk_is_one_line_and_leaves_nothing(sized_disk, tiny_st, beir_dir):
    result = run(*_train(tiny_st, beir_dir, sized_disk / "m", "--json"), ok=False)
    assert result.exit_code == 1, result.output
    assert_one_line_error(
        result, rf"{sized_disk / 'm.checkpoints'}: cannot be written \(No space left on device\): free space"
    )
    _json_error(result)
    assert not any(sized_disk.iterdir())  # the incomplete checkpoint's folder went with it: nothing to resume


@pytest.mark.parametrize(
    "sized_disk", ["20m"], indirect=True
)  # a model (5 MB) and a checkpoint (13 MB), not two models
def test_train_whose_output_fills_the_disk_keeps_the_previous_model_and_the_run_to_resume(
    sized_disk, tiny_st, beir_dir
):
    output = sized_disk / "m"
    run(*_train(tiny_st, beir_dir, output))
    before = _files(output)

    result = run(*_train(tiny_st, beir_dir, output, "--overwrite", "--seed", 1, "--json"), ok=False)
    assert result.exit_code == 1, result.output
    assert_one_line_error(
        result,
        rf"{output}: cannot be written \(No space left on device\): free space .*; the finished run is kept in "
        rf"{sized_disk / 'm.checkpoints'}: resume=True writes the model from it",
    )
    _json_error(result)
    assert _files(output) == before  # the previous model, whole
    assert sorted(p.name for p in sized_disk.iterdir()) == ["m", "m.checkpoints"]  # no temporary output

    resize(sized_disk, "40m")  # space freed: the resume writes the finished run's model without training again
    run(*_train(tiny_st, beir_dir, output, "--overwrite", "--seed", 1, "--resume"))
    assert _files(output) != before
    assert sorted(p.name for p in sized_disk.iterdir()) == ["m"]


def test_train_into_a_read_only_folder_is_one_line_before_any_work(disk, tiny_st, beir_dir):
    remount(disk, read_only=True)
    try:
        result = run(*_train(tiny_st, beir_dir, disk / "m", "--json"), ok=False)
    finally:
        remount(disk, read_only=False)
    assert_one_line_error(result, rf"{disk / 'm'}: cannot be written \({disk} is on a read-only file system\)")
    _json_error(result)
    assert "chose" not in result.output  # refused before the model and the data were loaded
    assert not any(disk.iterdir())


def _mine(beir_dir, output, *more):
    return ("mine", "--retriever", "bm25", "--data", beir_dir, "-o", output, "--num-negatives", 1, *more)


@pytest.mark.parametrize(
    "leave",
    [0, 8192],  # nothing; or room for the new rows and report (a page each), not for the chart
    ids=["full", "room-for-some-files"],
)
def test_mine_on_a_full_disk_is_one_line_and_keeps_the_previous_rows_and_report(disk, beir_dir, leave):
    output = disk / "mined.jsonl"
    run(*_mine(beir_dir, output))
    fill(disk, leave=leave)
    before = _files(disk)

    result = run(*_mine(beir_dir, output, "--overwrite", "--num-negatives", 2, "--json"), ok=False)
    assert result.exit_code == 1, result.output
    assert_one_line_error(result, rf"{disk}/mined\S*: cannot be written \(No space left on device\): free space")
    _json_error(result)
    result = run(*_mine(beir_dir, disk / "new.jsonl.gz"), ok=False)
    assert_one_line_error(result, rf"{disk}/new\S*: cannot be written \(No space left on device\): free space")
    assert _files(disk) == before  # the previous rows and report, never new rows beside an old chart; no temporaries


def test_mine_into_a_read_only_folder_is_one_line(disk, beir_dir):
    run(*_mine(beir_dir, disk / "mined.jsonl"))
    before = _files(disk)
    remount(disk, read_only=True)
    try:
        result = run(*_mine(beir_dir, disk / "mined.jsonl", "--overwrite", "--json"), ok=False)
        assert_one_line_error(result, rf"mined\.jsonl: cannot be written \({disk} is on a read-only file system\)")
        _json_error(result)
        result = run(*_mine(beir_dir, disk / "sub" / "new.jsonl"), ok=False)
        assert_one_line_error(result, rf"new\.jsonl: cannot be written \({disk} is on a read-only file system\)")
    finally:
        remount(disk, read_only=False)
    assert _files(disk) == before


def test_split_on_a_full_disk_is_one_line_and_keeps_the_previous_split(disk, beir_dir):
    output = disk / "s"
    run("split", beir_dir, "-o", output)
    fill(disk)
    before = _files(disk)

    result = run("split", beir_dir, "-o", output, "--overwrite", "--seed", 1, "--json", ok=False)
    _refused_for_space(result, output)
    result = run("split", beir_dir, "-o", disk / "new", "--json", ok=False)
    _refused_for_space(result, disk / "new")
    assert _files(disk) == before
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "s"]  # no temporary folder, no lock


def test_eval_reports_are_one_set_on_a_full_disk(disk, beir_dir):
    """Room for the new JSON but not the chart: neither is replaced (before, a new JSON beside the old chart)."""
    report, chart = disk / "eval.json", disk / "eval.png"
    run("eval", "--bm25", "--data", beir_dir, "--json-out", report, "--plot", chart)
    fill(disk, leave=8192)
    before = _files(disk)

    args = ("eval", "--bm25", "--data", beir_dir, "--json-out", report, "--plot", chart, "--overwrite", "--json")
    result = run(*args, ok=False)
    _refused_for_space(result, chart)
    assert _files(disk) == before


@pytest.mark.parametrize("command", ["add", "remove", "calibrate"])
def test_index_updates_on_a_full_disk_are_one_line_and_keep_the_index(disk, tmp_path, tiny_st, beir_dir, command):
    run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--indexes-dir", disk, "--name", "t")
    more = write_beir(tmp_path / "more", corpus={"zsh": "Z shell, a command interpreter for the terminal."})
    fill(disk)
    before = _files(disk)
    args = {
        "add": ("--corpus", more, "-m", tiny_st),
        "remove": ("vim",),
        "calibrate": ("--data", beir_dir, "--split", "train"),
    }[command]
    result = run("index", command, "t", *args, "--indexes-dir", disk, "--json", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert_one_line_error(result, r"cannot be written \(No space left on device\): free space on the device")
    assert _files(disk) == before  # no new generation, no temporaries: the index as it was
    (disk / "filler").unlink()
    assert "top 1 of 8 documents" in run("search", "web server", "-k", 1, "--index", "t", "--indexes-dir", disk).output


# -- an injected ENOSPC at the write layer: wherever tmpfs cannot be mounted too -------------------------

NO_SPACE_BELOW = """
import errno, os, sys, tempfile
out = sys.argv[1]

def full(real):
    def make(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir).startswith(out):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(dir, kwargs.get("prefix", "")))
        return real(*args, dir=dir, **kwargs)
    return make

tempfile.mkstemp, tempfile.mkdtemp = full(tempfile.mkstemp), full(tempfile.mkdtemp)
from embedtune.cli import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize("command", ["encode", "eval", "mine", "index build", "split"])
def test_an_injected_full_disk_is_one_line_with_no_debris(tmp_path, tiny_st, beir_dir, command):
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    texts = tmp_path / "texts.txt"
    texts.write_text("one text\nanother text\n")
    args = {
        "encode": ["encode", texts, "-o", out / "v.npy", "-m", tiny_st],
        "eval": ["eval", "--bm25", "--data", beir_dir, "--json-out", out / "e.json"],
        "mine": ["mine", "--retriever", "bm25", "--data", beir_dir, "-o", out / "m.jsonl"],
        "index build": ["index", "build", "-m", tiny_st, "--corpus", beir_dir, "--indexes-dir", out, "--name", "t"],
        "split": ["split", beir_dir, "-o", out / "s"],
    }[command]
    cmd = [sys.executable, "-c", NO_SPACE_BELOW, str(out), *map(str, args), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(out) in errors[0], errors
    assert json.loads(done.stdout.strip().splitlines()[-1])["schema"] == "embedtune.error/1"
    assert list(out.iterdir()) == []  # nothing written, nothing left behind


def test_split_overwrite_never_deletes_a_folder_it_did_not_write(tmp_path, beir_dir):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = run("split", beir_dir, "-o", mine, "--overwrite", ok=False)
    assert_one_line_error(result, r"mine: holds files this command did not write \(no split.json\)")
    assert (mine / "notes.txt").read_text() == "keep me"
