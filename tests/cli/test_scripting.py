"""The CLI as scripts use it: one JSON document per command with a schema, errors as JSON, --quiet,
progress bars only on a terminal, named bars, a first line before slow loading, and exit 130 on Ctrl-C."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import run

from embedtune.cli import main

SNAKE = r"^[a-z][a-z0-9_]*$"


def _doc(result, schema: str) -> dict:
    """The one JSON document on stdout, with its schema and snake_case top-level keys."""
    import re

    doc = json.loads(result.stdout)  # the whole of stdout parses: nothing else was printed there
    assert isinstance(doc, dict) and doc["schema"] == schema, result.stdout
    assert all(re.match(SNAKE, key) for key in doc), sorted(doc)
    return doc


def test_every_result_command_prints_one_schema_document(tmp_path, tiny_st, beir_dir, encoding_cache_dir):
    idx, model = tmp_path / "idx", tmp_path / "model"
    train = run("train", "-o", model, "-m", tiny_st, "--data", beir_dir, "--max-steps", 2, "--batch-size", 4, "--json")
    doc = _doc(train, "embedtune.train/1")
    assert doc["steps"] == 2 and doc["rows"] == 5 and doc["output"] == str(model) and doc["losses"]
    assert doc["metric"] == "ndcg@10" and set(doc["dev_after"]) >= {"ndcg@10"}

    mined = tmp_path / "mined.jsonl"
    doc = _doc(
        run(
            "mine",
            "-o",
            mined,
            "--data",
            beir_dir,
            "-m",
            tiny_st,
            "--num-negatives",
            1,
            "--relative-margin",
            "none",
            "--json",
        ),
        "embedtune.mine/1",
    )
    assert doc["output"] == str(mined) and doc["report"]["rows_written"] >= 1 and doc["report_json"].endswith(".json")

    build = ("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--name", "t", "--indexes-dir", idx, "--json")
    doc = _doc(run(*build), "embedtune.index.build/1")
    assert (doc["index"], doc["documents"], doc["dimension"]) == ("t", 8, 32) and doc["manifest"]["count"] == 8

    added = tmp_path / "added.jsonl"
    added.write_text(json.dumps({"_id": "emacs", "text": "Emacs editor"}) + "\n")
    doc = _doc(run("index", "add", "t", "--corpus", added, "--indexes-dir", idx, "--json"), "embedtune.index.add/1")
    assert (doc["added"], doc["replaced"], doc["unchanged"], doc["changed"]) == (1, 0, 0, True)
    removed = run("index", "remove", "t", "emacs", "nope", "--indexes-dir", idx, "--json")
    doc = _doc(removed, "embedtune.index.remove/1")
    assert doc["removed"] == 1 and doc["missing"] == ["nope"] and "warning: 1 id(s)" in removed.stderr

    doc = _doc(run("index", "info", "t", "--indexes-dir", idx, "--json"), "embedtune.index.info/1")
    assert doc["count"] == 8 and doc["path"] == str(idx / "t")
    doc = _doc(run("index", "list", "--indexes-dir", idx, "--json"), "embedtune.index.list/1")
    assert doc["indexes_dir"] == str(idx) and [r["name"] for r in doc["indexes"]] == ["t"]

    doc = _doc(
        run("search", "secure shell", "--index", "t", "--indexes-dir", idx, "-k", 2, "--json"), "embedtune.search/1"
    )
    assert len(doc["hits"]) == 2 and doc["index"] == "t"

    doc = _doc(
        run("eval", "--bm25", "--index", "t", "--indexes-dir", idx, "--data", beir_dir, "--json"), "embedtune.eval/1"
    )
    assert doc["split"] == "test" and [r["system"] for r in doc["results"]] == ["bm25", "index:t"]

    doc = _doc(run("cache", "info", "--json"), "embedtune.cache.info/1")
    assert doc["directory"] == str(encoding_cache_dir) and doc["spaces"]
    doc = _doc(run("cache", "clear", "--yes", "--json"), "embedtune.cache.clear/1")
    assert doc["spaces_deleted"] >= 1 and doc["bytes_freed"] > 0


def test_batch_search_is_json_lines_each_with_its_schema(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--name", "t", "--indexes-dir", idx)
    queries = tmp_path / "q.txt"
    queries.write_text("web server\ntext editor\n")
    out = run("search", "--queries", queries, "--index", "t", "--indexes-dir", idx, "-k", 1, "--json").stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["schema"] for line in lines] == ["embedtune.search/1"] * 2
    assert [line["query"] for line in lines] == ["web server", "text editor"]
    assert "JSON Lines" in run("search", "--help").stdout


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["search", "q", "--index", "nope", "--json"], "no index 'nope'", 1),  # a library error
        (["eval", "--data", "{beir}", "--json"], "nothing to evaluate", 1),
        (["search", "--index", "x", "--json"], "give either QUERY or --queries", 2),  # a usage error
        (["eval", "-k", "x", "--json"], "expected comma-separated int", 2),  # refused while parsing, before --json
        (["eval", "-k", "0", "--json"], "-k (ks: must be at least 1, got 0)", 2),  # an option value a setting refuses
        (["index", "build", "--corpus", "{beir}", "--batch-size", "0", "--json"], "--batch-size (batch_size", 2),
    ],
)
def test_errors_under_json_are_json_on_stdout_and_a_line_on_stderr(tmp_path, beir_dir, args, message, code):
    args = [a.replace("{beir}", str(beir_dir)) for a in args] + ["--indexes-dir", str(tmp_path / "idx")]
    if args[0] == "eval" and "--data" not in args:
        args += ["--data", str(beir_dir)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    error = json.loads(result.stdout)
    assert error["schema"] == "embedtune.error/1" and message in error["error"] and error["exit_code"] == code
    assert [line for line in result.stderr.splitlines() if line.startswith("Error: ")], result.stderr
    assert "Traceback" not in result.output


def test_without_json_errors_stay_off_stdout(tmp_path):
    result = CliRunner().invoke(main, ["search", "q", "--index", "nope", "--indexes-dir", str(tmp_path)])
    assert result.exit_code == 1 and result.stdout == "" and "Error: no index 'nope'" in result.stderr


def _interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_exits_130_with_one_line(monkeypatch, beir_dir, as_json):
    import embedtune.evaluate

    monkeypatch.setattr(embedtune.evaluate, "evaluate", _interrupt)
    result = CliRunner().invoke(main, ["eval", "--bm25", "--data", str(beir_dir), *(["--json"] if as_json else [])])
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines()[-1] == "interrupted" and "Aborted" not in result.output
    if as_json:
        assert json.loads(result.stdout) == {"schema": "embedtune.error/1", "error": "interrupted", "exit_code": 130}
    else:
        assert result.stdout == ""


class _Recorder:
    """Stands in for a library call that takes ``show_progress``: records what the CLI passed."""

    def __init__(self):
        self.calls: list[bool] = []

    def __call__(self, *args, show_progress: bool = True, **kwargs):
        self.calls.append(show_progress)
        raise KeyboardInterrupt  # stop before any work


@pytest.mark.parametrize(
    ("options", "env", "terminal", "expected"),
    [
        ([], {}, False, False),  # a log file or pipe: no bars
        ([], {}, True, True),  # a terminal: bars
        ([], {"TQDM_DISABLE": "1"}, True, False),  # tqdm's own switch is respected
        (["--progress"], {}, False, True),  # asked for in a log
        (["--progress"], {"TQDM_DISABLE": "1"}, False, True),  # the flag wins over the environment
        (["--no-progress"], {}, True, False),
        (["-q"], {}, True, False),
        (["--quiet", "--progress"], {}, True, False),  # quiet means quiet
    ],
)
def test_one_show_progress_decides_every_bar(monkeypatch, tmp_path, options, env, terminal, expected):
    import embedtune.cli.app as app
    import embedtune.index

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(app, "_stderr_is_terminal", lambda: terminal)
    build = _Recorder()
    monkeypatch.setattr(embedtune.index, "build_index", build)
    corpus = tmp_path / "c.jsonl"
    result = CliRunner().invoke(main, ["index", "build", "--name", "x", "--corpus", str(corpus), *options])
    assert result.exit_code == 130 and build.calls == [expected]


def test_quiet_silences_information_but_not_warnings(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    build = ("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--name", "t", "--indexes-dir", idx)
    loud = run(*build)
    assert loud.stderr.splitlines()[0] == f"loading model {tiny_st} ..."  # said before the seconds of loading
    quiet = run("search", "shell", "--index", "t", "--indexes-dir", idx, "-k", 99, "--quiet")
    assert quiet.stderr.strip() == "warning: k=99 is larger than index 't' (8 documents); returning at most 8 hits"
    assert run("search", "shell", "--index", "t", "--indexes-dir", idx, "-k", 2, "-q").stderr == ""
    forced = run("search", "--queries", beir_dir / "queries.jsonl", "--index", "t", "--indexes-dir", idx, "--progress")
    assert "encoding queries (index:t)" in forced.stderr  # a named bar, drawn into the log when asked


def test_eval_bars_say_what_they_encode(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--name", "t", "--indexes-dir", idx, "--no-cache")
    args = ("eval", "-m", tiny_st, "--index", "t", "--indexes-dir", idx, "--data", beir_dir, "--no-cache")
    stderr = run(*args, "--progress").stderr
    label = tiny_st.name
    for bar in (f"encoding corpus ({label})", f"encoding queries ({label})", "encoding queries (index:t)"):
        assert bar in stderr, stderr
    assert f"loading {tiny_st}, index:t ..." in stderr
    plain = run(*args).stderr  # not a terminal: no bars, only the first line
    assert "encoding" not in plain and "\r" not in plain


def test_shell_completion_as_the_readme_documents_it(monkeypatch):
    """``_EMBEDTUNE_COMPLETE`` (click's completion protocol) completes command names and options."""
    monkeypatch.setenv("_EMBEDTUNE_COMPLETE", "bash_complete")
    for words, expected in (("embedtune ev", "plain,eval"), ("embedtune search --fus", "plain,--fusion")):
        monkeypatch.setenv("COMP_WORDS", words)
        monkeypatch.setenv("COMP_CWORD", str(len(words.split()) - 1))
        result = CliRunner().invoke(main, [], prog_name="embedtune")
        assert expected in result.output.splitlines(), (words, result.output)
