"""Every command through click's runner: the happy path, --help, and one-line errors on bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from embedtune.cli import main


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def assert_one_line_error(result, pattern: str) -> None:
    import re

    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [[], ["train"], ["index"], ["index", "build"], ["search"], ["eval"]])
def test_help_explains_every_command(command):
    out = run(*command, "--help").output
    assert "Usage:" in out
    if command and command != ["index"]:
        assert "[default:" in out  # defaults are shown


def test_train_index_search_eval(tmp_path, tiny_bert, beir_dir):
    model, idx = tmp_path / "model", tmp_path / "indexes"
    out = run(
        "train",
        "--output",
        model,
        "--model",
        tiny_bert,
        "--data",
        beir_dir,
        "--max-steps",
        10,
        "--batch-size",
        4,
        "--lr",
        "1e-3",
    ).output
    assert "trained 10 steps on 5 rows" in out and "over the last 20%" in out and (model / "modules.json").is_file()
    assert "dev ndcg@10" in out and (model / "README.md").is_file() and (model / "training.png").is_file()

    out = run("index", "build", "--model", model, "--corpus", beir_dir, "--indexes-dir", idx).output
    assert "index 'model' written" in out and "8 documents x 32 dims" in out

    # A query identical to a document's text must find that document first, with cosine ~1.
    hits = json.loads(run("search", CORPUS_VIM, "--index", "model", "--indexes-dir", idx, "--json", "-k", 2).stdout)
    assert hits["hits"][0]["id"] == "vim" and hits["hits"][0]["score"] == pytest.approx(1.0, abs=0.02)
    readable = run("search", "text", "editor", "--index", "model", "--indexes-dir", idx, "-k", 2).output
    assert "top 2 of 8 documents in 'model' for: text editor" in readable

    json_out = tmp_path / "eval.json"
    out = run(
        "eval",
        "--model",
        model,
        "--index",
        "model",
        "--indexes-dir",
        idx,
        "--data",
        beir_dir,
        "-k",
        "1,10",
        "--json-out",
        json_out,
    ).output
    assert "| system | recall@1 | recall@10 | mrr@1 | mrr@10 | ndcg@10 |" in out
    results = json.loads(json_out.read_text())
    assert [r["kind"] for r in results] == ["model", "index"] and results[1]["n_queries"] == 2


CORPUS_VIM = "Vim is an almost compatible version of the UNIX editor Vi, a text editor for programmers."


def test_bad_inputs_give_one_line_errors(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "indexes"
    assert_one_line_error(run("search", "q", "--index", "nope", "--indexes-dir", idx, ok=False), "no index 'nope'")
    assert_one_line_error(
        run("train", "--output", tmp_path / "m", "--data", tmp_path / "x.jsonl", ok=False), r"x\.jsonl: no such file"
    )
    assert_one_line_error(
        run("train", "--output", tmp_path / "m", "--model", tmp_path / "absent", ok=False), "no such model directory"
    )
    (beir_dir / "queries.jsonl").write_text('{"_id": "q-web", "text": "web server"}\n{"_id": "q-edit"\n')
    assert_one_line_error(
        run("eval", "--model", tiny_st, "--data", beir_dir, ok=False), r"queries\.jsonl:2: invalid JSON"
    )
    assert_one_line_error(run("eval", "--data", beir_dir, ok=False), "nothing to evaluate")
    assert_one_line_error(run("eval", "--model", tiny_st, "-k", "0,10", ok=False), "positive integers")
    assert not (tmp_path / "m").exists()


def test_search_with_another_model_is_refused(tmp_path, tiny_st, tiny_bert, beir_dir):
    idx = tmp_path / "indexes"
    run("index", "build", "--model", tiny_st, "--corpus", beir_dir, "--name", "tiny", "--indexes-dir", idx)
    assert_one_line_error(
        run("search", "web", "--index", "tiny", "--indexes-dir", idx, "--model", tiny_bert, ok=False),
        "rebuild the index with this model",
    )
    assert_one_line_error(
        run(
            "index", "build", "--model", tiny_st, "--corpus", beir_dir, "--name", "tiny", "--indexes-dir", idx, ok=False
        ),
        "already exists",
    )


def test_train_from_a_config_file_with_overrides_and_clear_errors(tmp_path, tiny_st, beir_dir):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_st}\ndata: {beir_dir}\nmax_steps: 50\nbatch_size: 2\nloss: cosent\n")
    assert_one_line_error(run("train", "--config", config, ok=False), r"run\.yaml: no 'output'")
    assert_one_line_error(
        run("train", "--config", config, "-o", tmp_path / "m", ok=False),
        r"loss 'cosent' needs columns \(sentence1, sentence2, score\); the data has pairs \(anchor, positive\)",
    )
    out = run("train", "--config", config, "-o", tmp_path / "m", "--loss", "mnrl", "--max-steps", 2, "--no-dev").output
    assert "trained 2 steps on 5 rows" in out and "dev " not in out.split("trained", 1)[1]
    assert "loss: mnrl" in (tmp_path / "m" / "train_config.yaml").read_text()
    assert_one_line_error(run("train", ok=False), "give --output")
