"""Outputs never replace what a command reads (issue 31).

An existing output is refused unless --overwrite (eval's report files too), and an output that is,
contains or lies inside one of the command's own inputs is refused even with --overwrite, before
any work, paths compared after resolving symlinks. The refused input is left byte for byte as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run, write_beir

from embedtune.errors import EmbedtuneError
from embedtune.io import refuse_overlap


def _snapshot(path: Path) -> dict[str, bytes]:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return {str(p): p.read_bytes() for p in files if p.is_file()}


def _pairs(path: Path) -> Path:
    rows = [("web server", "nginx serves web pages"), ("text editor", "vim edits text"), ("game", "tetris")]
    path.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in rows))
    return path


# -- eval: existing outputs need --overwrite ---------------------------------------------------------


@pytest.mark.parametrize("flag", ["--json-out", "--markdown-out", "--plot"])
def test_eval_refuses_an_existing_report_file_without_overwrite(tmp_path, beir_dir, flag):
    target = tmp_path / "existing"
    target.write_text("an earlier report\n")
    result = run("eval", "--bm25", "--data", beir_dir, flag, target, ok=False)
    assert_one_line_error(result, r"existing: already exists \(pass --overwrite to replace it\)")
    assert target.read_text() == "an earlier report\n"

    run("eval", "--bm25", "--data", beir_dir, flag, target, "--overwrite")
    assert target.read_bytes() != b"an earlier report\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # written atomically


def test_eval_refuses_a_run_folder_holding_files_without_overwrite(tmp_path, beir_dir):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "1-bm25.beir-test.run").write_text("an earlier run\n")
    result = run("eval", "--bm25", "--data", beir_dir, "--run-out", runs, ok=False)
    assert_one_line_error(result, r"runs: already exists \(pass --overwrite")
    assert (runs / "1-bm25.beir-test.run").read_text() == "an earlier run\n"
    run("eval", "--bm25", "--data", beir_dir, "--run-out", runs, "--overwrite")
    assert "Q0" in (runs / "1-bm25.beir-test.run").read_text()


# -- output is input ----------------------------------------------------------------------------------


def test_eval_never_writes_into_its_data_not_even_with_overwrite(tmp_path, beir_dir):
    (tmp_path / "link").symlink_to(beir_dir)  # the same folder under another name
    before = _snapshot(beir_dir)
    for flag, target in [
        ("--json-out", beir_dir / "qrels" / "test.tsv"),
        ("--markdown-out", tmp_path / "link" / "qrels" / "test.tsv"),
        ("--run-out", beir_dir / "qrels"),
    ]:
        result = run("eval", "--bm25", "--data", beir_dir, flag, target, "--overwrite", "--json", ok=False)
        assert_one_line_error(result, rf"{flag} lies inside the input {beir_dir}")
        assert json.loads(result.stdout.splitlines()[-1])["schema"] == "embedtune.error/1"
    assert _snapshot(beir_dir) == before


def test_eval_never_writes_into_an_index_it_reads(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--indexes-dir", idx, "--name", "t")
    manifest = idx / "t" / "manifest.json"
    before = manifest.read_bytes()
    args = ["eval", "--index", "t", "--indexes-dir", idx, "--data", beir_dir, "--json-out", manifest, "--overwrite"]
    assert_one_line_error(run(*args, ok=False), r"manifest\.json: the --json-out lies inside the input .*idx/t")
    assert manifest.read_bytes() == before


def test_mine_never_replaces_its_data(tmp_path, beir_dir):
    pairs = _pairs(tmp_path / "pairs.jsonl")
    before = {**_snapshot(pairs), **_snapshot(beir_dir)}
    mine = ["mine", "--retriever", "bm25", "--num-negatives", "1", "--overwrite"]
    result = run(*mine, "--data", pairs, "-o", pairs, ok=False)
    assert_one_line_error(result, rf"pairs\.jsonl: the --output is the input {pairs}")
    result = run(*mine, "--data", beir_dir, "-o", beir_dir / "corpus.jsonl", ok=False)
    assert_one_line_error(result, rf"corpus\.jsonl: the --output lies inside the input {beir_dir}")
    (tmp_path / "alias.jsonl").symlink_to(pairs)
    result = run(*mine, "--data", tmp_path / "alias.jsonl", "-o", pairs, ok=False)
    assert_one_line_error(result, r"the --output is the input .*alias\.jsonl")
    assert {**_snapshot(pairs), **_snapshot(beir_dir)} == before


def test_split_never_replaces_its_input(tmp_path, beir_dir):
    before = _snapshot(beir_dir)
    result = run("split", beir_dir, "-o", beir_dir, "--overwrite", ok=False)
    assert_one_line_error(result, rf"the output is the input {beir_dir}")
    result = run("split", beir_dir, "-o", tmp_path, "--overwrite", ok=False)  # a folder holding the input
    assert_one_line_error(result, rf"the output contains the input {beir_dir}")
    assert _snapshot(beir_dir) == before
    pairs = _pairs(tmp_path / "pairs.jsonl")
    result = run("split", pairs, "-o", pairs, "--overwrite", ok=False)
    assert_one_line_error(result, rf"the output is the input {pairs}")
    assert "nginx" in pairs.read_text()


def test_encode_never_replaces_its_input(tmp_path, tiny_st):
    data = write_beir(tmp_path / "beir")
    before = _snapshot(data)
    result = run("encode", data, "-o", data / "vectors.npy", "-m", tiny_st, ok=False)
    assert_one_line_error(result, rf"vectors\.npy: the output lies inside the input {data}")
    texts = tmp_path / "texts.txt"
    texts.write_text("one text\nanother text\n")
    (tmp_path / "texts.npy").symlink_to(texts)  # the output's name leads to the input
    result = run("encode", texts, "-o", tmp_path / "texts.npy", "-m", tiny_st, "--overwrite", ok=False)
    assert_one_line_error(result, rf"texts\.npy: the output is the input {texts}")
    assert _snapshot(data) == before and texts.read_text() == "one text\nanother text\n"


def test_index_build_never_replaces_its_corpus(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    build = ["index", "build", "-m", tiny_st, "--indexes-dir", idx, "--name", "t", "--overwrite"]
    run(*build, "--corpus", beir_dir)
    corpus = idx / "t" / "corpus.jsonl"
    corpus.write_bytes((beir_dir / "corpus.jsonl").read_bytes())  # the user kept the corpus in the index folder
    result = run(*build, "--corpus", corpus, ok=False)
    assert_one_line_error(result, rf"idx/t: the index contains the input {corpus}")
    result = run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--indexes-dir", beir_dir, ok=False)
    assert_one_line_error(result, rf"the index lies inside the input {beir_dir}")
    assert corpus.read_bytes() == (beir_dir / "corpus.jsonl").read_bytes()


def test_refuse_overlap_compares_resolved_paths(tmp_path):
    folder, other = tmp_path / "data", tmp_path / "other"
    folder.mkdir()
    (tmp_path / "alias").symlink_to(folder)
    refuse_overlap(other / "out.json", [folder, None])  # apart: nothing to refuse
    refuse_overlap(tmp_path / "data2", [folder])  # a name that only starts like the input's
    for output, relation in [(folder, "is"), (tmp_path / "alias" / "x", "lies inside"), (tmp_path, "contains")]:
        with pytest.raises(EmbedtuneError, match=rf"the result {relation} the input {folder}"):
            refuse_overlap(output, [folder], what="result")


def test_the_library_refuses_too(tmp_path, beir_dir):
    """The Python API checks what the CLI checks (the CLI only adds the flag names)."""
    from embedtune.mining import mine_to_file

    with pytest.raises(EmbedtuneError, match=r"rows\.jsonl: the output lies inside the input"):
        mine_to_file(beir_dir, beir_dir / "rows.jsonl", retriever="bm25", overwrite=True, show_progress=False)
    assert not (beir_dir / "rows.jsonl").exists()


# -- train: never into its data, its dev data or its base model ---------------------------------------


def test_train_never_replaces_its_data(tmp_path, beir_dir, tiny_st):
    before = _snapshot(beir_dir)
    for output in (beir_dir, beir_dir / "model"):
        result = run(
            "train", "--data", beir_dir, "-m", tiny_st, "-o", output, "--overwrite", "--max-steps", "1", ok=False
        )
        assert_one_line_error(result, r"the output (is|lies inside) the input .*beir")
    pairs = _pairs(tmp_path / "pairs.jsonl")
    result = run("train", "--data", pairs, "-m", tiny_st, "-o", pairs, "--overwrite", ok=False)
    assert_one_line_error(result, r"pairs\.jsonl: the output is the input")
    result = run("train", "--data", pairs, "-m", tiny_st, "-o", tiny_st / "sub", ok=False)
    assert_one_line_error(result, r"the output lies inside the input .*tiny-st")
    assert _snapshot(beir_dir) == before


def test_overwrite_never_deletes_a_folder_train_did_not_write(tmp_path, beir_dir, tiny_st):
    mine = tmp_path / "projects"
    (mine / "thesis").mkdir(parents=True)
    (mine / "thesis" / "draft.tex").write_text("years of work")
    result = run("train", "--data", beir_dir, "-m", tiny_st, "-o", mine, "--overwrite", ok=False)
    assert_one_line_error(result, r"projects: holds files this command did not write \(no embedtune_train.json\)")
    assert (mine / "thesis" / "draft.tex").read_text() == "years of work"
