"""Every command through click's runner: the happy path, --help, and one-line errors on bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error, hf_cache, run

from embedtune.cli import main


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["train"],
        ["index"],
        ["index", "build"],
        ["index", "add"],
        ["index", "remove"],
        ["index", "info"],
        ["index", "list"],
        ["search"],
        ["eval"],
        ["encode"],
    ],
)
def test_help_explains_every_command(command):
    out = run(*command, "--help").output
    assert "Usage:" in out
    if command and command[-1] not in ("index", "remove", "info", "list"):
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
    results = json.loads(json_out.read_text())["results"]  # the document eval --json prints
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
    assert_one_line_error(
        run("eval", "--model", tiny_st, "-k", "0,10", ok=False), r"^Error: -k \(ks: must be at least 1"
    )
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


def test_index_update_inspect_and_batch_search(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "indexes"
    out = run(
        "index", "build", "-m", tiny_st, "--corpus", beir_dir, "--name", "t", "--indexes-dir", idx, "--type", "hnsw"
    )
    assert "8 documents x 32 dims" in out.output and "hnsw, default ef_search=" in out.output

    added = tmp_path / "added.jsonl"
    added.write_text(
        json.dumps({"_id": "vim", "text": CORPUS_VIM})
        + "\n"
        + json.dumps({"_id": "emacs", "text": "Emacs editor"})
        + "\n"
    )
    out = run("index", "add", "t", "--corpus", added, "--indexes-dir", idx).output
    assert "1 added, 0 replaced, 1 unchanged" in out
    result = run("index", "remove", "t", "gzip", "nope", "--indexes-dir", idx)
    assert "1 removed" in result.stdout and "warning: 1 id(s) not in the index: nope" in result.stderr

    info = run("index", "info", "t", "--indexes-dir", idx, "--verify").output
    assert "documents: 8 (1 removed, filtered at search)" in info and "SHA-256 verified" in info
    assert "why: chosen explicitly (type hnsw)" in info and "2 update(s)" in info
    manifest = json.loads(run("index", "info", "t", "--indexes-dir", idx, "--json").output)
    assert manifest["index_type"] == "hnsw" and manifest["count"] == 8 and manifest["pooling"] == "mean"
    listed = json.loads(run("index", "list", "--indexes-dir", idx, "--json").output)["indexes"]
    assert [(r["name"], r["type"], r["documents"]) for r in listed] == [("t", "hnsw", 8)]

    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        json.dumps({"_id": "q1", "text": CORPUS_VIM}) + "\n" + json.dumps({"_id": "q2", "text": "zip"}) + "\n"
    )
    lines = run(
        "search", "--queries", queries, "--index", "t", "--indexes-dir", idx, "-k", 3, "--json", "--show-text", 0
    )
    results = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [r["id"] for r in results] == ["q1", "q2"] and results[0]["hits"][0]["id"] == "vim"
    assert all(len(r["hits"]) == 3 and "text" not in r["hits"][0] for r in results)
    assert all("gzip" not in [h["id"] for h in r["hits"]] for r in results)
    plain = tmp_path / "queries.txt"
    plain.write_text("text editor\n\nweb server\n")
    out = run("search", "--queries", plain, "--index", "t", "--indexes-dir", idx, "-k", 1, "--show-text", 0).output
    assert out.count("top 1 of 8 documents in 't'") == 2 and "     " not in out

    assert_one_line_error(run("search", "--index", "t", "--indexes-dir", idx, ok=False), "either QUERY or --queries")
    assert_one_line_error(
        run("search", "x", "--index", "t", "--indexes-dir", idx, "--nprobe", 4, ok=False), "nprobe does not apply"
    )
    assert_one_line_error(run("index", "info", "nope", "--indexes-dir", idx, ok=False), "no index 'nope'.*available: t")
    (idx / "t" / "index.3.faiss").write_bytes(b"")  # build, add, remove: generation 3
    assert_one_line_error(
        run("search", "x", "--index", "t", "--indexes-dir", idx, ok=False), "does not match the manifest"
    )
    assert_one_line_error(
        run("index", "remove", "t", "vim", "--indexes-dir", idx, ok=False), "does not match the manifest"
    )


def test_eval_writes_json_markdown_and_chart(tmp_path, tiny_st, beir_dir):
    out = tmp_path / "out"
    result = run(
        "eval",
        "--bm25",
        "--model",
        tiny_st,
        "--data",
        beir_dir,
        "--metrics",
        "ndcg@10,recall,map@5,precision@1,hit_rate@3",
        "-k",
        "1,100",
        "--json-out",
        out / "eval.json",
        "--markdown-out",
        out / "eval.md",
        "--plot",
        out / "eval.png",
        "--per-query",
    )
    header = "| system | ndcg@10 | recall@1 | recall@100 | map@5 | precision@1 | hit_rate@3 | queries | seconds |"
    assert header in result.stdout and "| bm25 |" in result.stdout
    assert (out / "eval.md").read_text() == result.stdout
    results = json.loads((out / "eval.json").read_text())["results"]
    assert [r["kind"] for r in results] == ["bm25", "model"]
    assert set(results[0]["per_query"]) == {"q-ssh", "q-db"}
    assert results[0]["metrics"]["recall@100"] == 1.0  # every relevant document shares a term with its query
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["eval.json", "eval.md", "eval.png"]  # no temporary files


def test_eval_warnings_go_to_stderr_with_counts(tmp_path):
    from helpers import CORPUS, write_beir

    corpus = {**CORPUS, "q-ssh": "secure shell"}  # the query's own text is a corpus document
    queries = {"q-ssh": "secure shell", "q-stop": "the and of"}
    root = write_beir(
        tmp_path / "b", corpus=corpus, queries=queries, qrels={"test": [("q-ssh", "openssh"), ("q-stop", "vim")]}
    )
    result = CliRunner().invoke(main, ["eval", "--bm25", "--data", str(root)])
    assert result.exit_code == 0, result.output
    assert "warning: 1 of 2 queries share their id with a corpus document" in result.stderr
    assert "warning: bm25: no results for 1 of 2 queries (counted as 0; e.g. q-stop)" in result.stderr
    assert "warning" not in result.stdout


def test_eval_bad_input_is_one_line(tmp_path, beir_dir):
    assert_one_line_error(run("eval", "--bm25", "--data", beir_dir, "--metrics", "f1", ok=False), "unknown metric 'f1'")
    assert_one_line_error(run("eval", "--bm25", "--data", beir_dir, "--metrics", "ndcg@x", ok=False), "positive")
    (beir_dir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq-ssh\topenssh\t1\nq-ssh\tgone-1\t1\nq-nope\tgone-2\t1\n"
    )
    assert_one_line_error(
        run("eval", "--bm25", "--data", beir_dir, ok=False),
        r"test\.tsv:3: field 'corpus-id': unknown document id 'gone-1' \(in all: 1 row\(s\) name unknown queries, "
        r"2 unknown documents\)",
    )
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq-ssh\topenssh\t0\n")
    assert_one_line_error(run("eval", "--bm25", "--data", beir_dir, ok=False), "empty split")


def test_precision_and_cache_options_of_every_encoding_command(tmp_path, tiny_st, beir_dir, encoding_cache_dir):
    idx = tmp_path / "indexes"
    build = ("index", "build", "--model", tiny_st, "--corpus", beir_dir, "--indexes-dir", idx)
    assert "(int8, torch)" in run(*build, "--name", "q8", "--precision", "int8", "--no-cache").output
    assert not list(encoding_cache_dir.iterdir())  # --no-cache: nothing read or written
    assert "(fp32, torch)" in run(*build, "--name", "f32", "--precision", "fp32").output
    assert len(list(encoding_cache_dir.glob("*.sqlite"))) == 1
    assert run("index", "add", "q8", "--corpus", beir_dir, "--indexes-dir", idx, "--no-cache").exit_code == 0

    hits = json.loads(run("search", "secure shell", "--index", "q8", "--indexes-dir", idx, "-k", 3, "--json").stdout)[
        "hits"
    ]
    result = CliRunner().invoke(
        main,
        [
            "search",
            "secure shell",
            "--index",
            "f32",
            "--indexes-dir",
            str(idx),
            "-k",
            "3",
            "--precision",
            "fp16",
            "--json",
        ],
    )
    assert result.exit_code == 0 and "warning: precision fp16 runs on CUDA GPUs only" in result.stderr
    assert len(json.loads(result.stdout)["hits"]) == len(hits) == 3

    report = json.loads(run("eval", "--model", tiny_st, "--data", beir_dir, "--precision", "int8", "--json").stdout)
    assert report["results"][0]["precision"] == "int8"
    out = tmp_path / "mined.jsonl"
    run(
        "mine",
        "-o",
        out,
        "--data",
        beir_dir,
        "--model",
        tiny_st,
        "--precision",
        "bf16",
        "--no-cache",
        "--num-negatives",
        1,
        "--relative-margin",
        "none",
    )
    assert out.is_file()

    # Refused by the settings themselves, with the message the Python API and a config file give, plus the flag.
    for command in (build, ("search", "q", "--index", "q8"), ("eval", "--model", tiny_st), ("mine", "-o", out)):
        assert_one_line_error(
            run(*command, "--precision", "fp8", ok=False),
            r"--precision \(precision: 'fp8' is not one of auto, fp32, bf16, fp16, int8\)",
        )
    assert_one_line_error(
        run("train", "--output", tmp_path / "m", "--precision", "int8", ok=False),
        r"--precision \(precision: 'int8' is for encoding only; training runs in auto, fp32, bf16\)",
    )


def test_cache_info_lists_each_vector_space_and_clear_empties_it(tmp_path, tiny_st, beir_dir, encoding_cache_dir):
    assert "0 vector space(s)" in run("cache", "info").output  # no folder yet: nothing to list, no error
    idx = tmp_path / "indexes"
    run("index", "build", "--model", tiny_st, "--corpus", beir_dir, "--indexes-dir", idx, "--precision", "fp32")
    run("eval", "--model", tiny_st, "--data", beir_dir, "--precision", "bf16")  # queries and corpus in bf16
    info = json.loads(run("cache", "info", "--json").stdout)
    assert info["directory"] == str(encoding_cache_dir)
    spaces = {(s["precision"], s["prompt"]): s for s in info["spaces"]}
    assert set(spaces) == {("fp32", ""), ("bf16", "")}  # eval's queries share the documents' space: no prompts
    corpus = len((beir_dir / "corpus.jsonl").read_text().splitlines())
    assert spaces["fp32", ""]["texts"] == corpus and spaces["fp32", ""]["source"] == str(tiny_st)
    assert spaces["bf16", ""]["texts"] > corpus and all(s["disk_bytes"] > 0 for s in spaces.values())
    assert str(tiny_st) in run("cache", "info").output

    assert run("cache", "clear", input="n\n", ok=False).exit_code == 1  # declined: nothing deleted
    assert len(list(encoding_cache_dir.glob("*.sqlite"))) == 2
    assert "2 vector space(s) deleted" in run("cache", "clear", "--yes").output
    assert not list(encoding_cache_dir.iterdir())


def test_eval_significance_and_run_files(tmp_path, tiny_st, beir_dir):
    runs = tmp_path / "runs"
    args = ("eval", "--bm25", "--model", tiny_st, "--data", beir_dir, "--significance", "--run-out", runs)
    results = json.loads(run(*args, "--json").stdout)["results"]
    assert "significance" not in results[0] and results[1]["significance"]["compared_with"] == "bm25"
    assert set(results[1]["significance"]["p_values"]) == set(results[1]["metrics"])
    files = sorted(p.name for p in runs.iterdir())
    assert len(files) == 2 and all(f.endswith("-test.run") for f in files)
    first = (runs / files[0]).read_text().splitlines()[0].split()
    assert len(first) == 6 and first[1] == "Q0" and first[3] == "1"
    table = run(*args, "--overwrite").stdout  # the run files are there from the first call
    assert "p < 0.05" in table or "*" in table


def test_search_shows_control_characters_escaped(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    run("index", "build", "-m", tiny_st, "--corpus", beir_dir, "--name", "t", "--indexes-dir", idx)
    out = run("search", "\x1b[2Jred\x07 alert", "--index", "t", "--indexes-dir", idx, "-k", 1).output
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2Jred\\x07 alert" in out


def test_index_build_names_an_index_of_a_hub_id_after_the_id(tmp_path, tiny_st, beir_dir, monkeypatch):
    hf_cache(tmp_path / "hub", "someone/tiny-st", tiny_st)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    idx = tmp_path / "indexes"
    out = run("index", "build", "--model", "someone/tiny-st", "--corpus", beir_dir, "--indexes-dir", idx).output
    assert "index 'tiny-st' written" in out and (idx / "tiny-st" / "manifest.json").is_file()
