"""A catalogue of bad inputs across every command: each is refused with exit status 1, one line of
error that names the file (line, field) or the option, no traceback, and no file left behind.

The few indexes, models and files the cases need are made once per module (the tiny model makes
every command quick). Each case is one test id; ``{w}`` is the module's folder, ``{idx}`` its
indexes folder, ``{model}`` the tiny sentence-transformers model.
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write_beir

from embedtune.cli import main

CORPUS_LINE = json.dumps({"_id": "d1", "text": "a good document"})


def _write_bad_files(w: Path) -> None:
    """Every damaged data file the cases read (each read-only)."""
    good = CORPUS_LINE + "\n"
    (w / "bad_utf8.jsonl").write_bytes(good.encode() + b'{"_id": "d2", "text": "caf\xe9"}\n')
    (w / "not_gzip.jsonl.gz").write_text(good)
    (w / "truncated.jsonl.gz").write_bytes(gzip.compress((good * 200).encode())[:60])
    (w / "surrogate.jsonl").write_text(good + '{"_id": "d2", "text": "bad \\ud800 text"}\n')
    (w / "bad_json.jsonl").write_text(good + '{"_id": "d2", "text": \n')
    (w / "missing_id.jsonl").write_text('{"text": "no id"}\n')
    (w / "dup_id.jsonl").write_text(good + good)
    (w / "empty_text.jsonl").write_text(good + '{"_id": "d2", "text": "  "}\n')
    (w / "not_object.jsonl").write_text("[1, 2]\n")
    (w / "empty.jsonl").write_text("\n")
    (w / "afile").write_text("a file, not a folder\n")
    (w / "queries_utf8.txt").write_bytes(b"good query\nbad \xff query\n")
    (w / "queries_surrogate.jsonl").write_text('{"_id": "q1", "text": "x \\udcff y"}\n')
    (w / "queries_empty.txt").write_text("\n  \n")
    (w / "queries_notext.jsonl").write_text('{"_id": "q1"}\n')
    (w / "ids_utf8.txt").write_bytes(b"nginx\n\xff\xfe\n")
    (w / "unclosed.csv").write_text('query,positive\nq1,"p1\nq2,p2\nq3,p3"\nq4,p4\n')
    (w / "extra.csv").write_text("query,positive\nq1,p1\nq2,p2,extra\nq3,p3\n")
    (w / "pairs_surrogate.jsonl").write_text(
        json.dumps({"query": "q1", "positive": "p1"}) + '\n{"query": "q2", "positive": "p\\ud800"}\n'
    )
    (w / "pairs_nopositive.jsonl").write_text(json.dumps({"query": "q1", "passage_x": "p1"}) + "\n")
    (w / "scored.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t0.5\nc\td\t7\n")
    for name, text in {
        "batch1": "batch_size: 1\nmax_seq_length: 8\n",
        "steps": "max_steps: -5\n",
        "lr_string": 'learning_rate: "1e-5"\n',
        "batch_two": "batch_size: two\n",
        "loss42": "loss: 42\n",
        "temp0": "temperature: 0\n",
        "unknown": "learning_rat: 0.001\n",
        "list": "- 1\n- 2\n",
    }.items():
        output = "" if name == "list" else f"output: {w}/out/model\nmodel: {{model}}\ndata: {w}/beir\n"
        (w / f"{name}.yaml").write_text(output + text)


def _write_bad_beir(w: Path) -> None:
    write_beir(w / "beir-surrogate")
    (w / "beir-surrogate" / "corpus.jsonl").write_text(
        (w / "beir-surrogate" / "corpus.jsonl").read_text() + '{"_id": "x", "text": "\\ud800"}\n'
    )
    for name, qrels in {
        "beir-unknown-doc": "query-id\tcorpus-id\tscore\nq-web\tnowhere\t1\n",
        "beir-bad-header": "qid\tdid\tscore\nq-web\tnginx\t1\n",
        "beir-score": "query-id\tcorpus-id\tscore\nq-web\tnginx\thigh\n",
    }.items():
        write_beir(w / name)
        (w / name / "qrels" / "test.tsv").write_text(qrels)


def _damage_indexes(idx: Path) -> None:
    """Copies of the good index, each damaged one way."""
    for name in ("faiss-flipped", "store-flipped", "bad-manifest", "format-1", "incomplete"):
        shutil.copytree(idx / "good", idx / name)
    faiss = idx / "faiss-flipped" / "index.1.faiss"
    data = bytearray(faiss.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = os.urandom(16)  # same size, random bytes inside
    faiss.write_bytes(bytes(data))
    store = idx / "store-flipped" / "docs.1.sqlite"
    data = bytearray(store.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    store.write_bytes(bytes(data))
    (idx / "bad-manifest" / "manifest.json").write_text("{not json")
    manifest = json.loads((idx / "format-1" / "manifest.json").read_text())
    (idx / "format-1" / "manifest.json").write_text(json.dumps(manifest | {"format": 1}))
    (idx / "incomplete" / "docs.1.sqlite").unlink()
    (idx / "notindex").mkdir()
    (idx / "notindex" / "docs.jsonl").write_text("the user's own file\n")
    (idx / "notindex" / "index.faiss").write_text("the user's own file\n")


def _broken_models(w: Path, tiny_st: Path) -> None:
    for name in ("truncated-model", "garbage-model"):
        shutil.copytree(tiny_st, w / name)
        weights = w / name / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2] if name == "truncated-model" else os.urandom(512))


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_st, tiny_bert) -> dict[str, str]:
    from embedtune.index import build_index

    w = tmp_path_factory.mktemp("bad-inputs")
    beir = write_beir(w / "beir")
    (w / "cwd").mkdir()
    idx = w / "indexes"
    build_index(beir, "good", model=tiny_st, indexes_dir=idx, show_progress=False)
    _write_bad_files(w)
    for yaml_file in w.glob("*.yaml"):
        yaml_file.write_text(yaml_file.read_text().replace("{model}", str(tiny_st)))
    _write_bad_beir(w)
    _damage_indexes(idx)
    _broken_models(w, tiny_st)
    (w / "out").mkdir()
    (w / "out" / "existing").mkdir()
    (w / "out" / "existing" / "keep.txt").write_text("an earlier model\n")
    (w / "out" / "rows.jsonl").write_text("earlier rows\n")
    return {"w": str(w), "idx": str(idx), "model": str(tiny_st), "bert": str(tiny_bert), "beir": str(beir)}


BUILD = "index build -m {model} --indexes-dir {idx}"
TRAIN = "train -o {w}/out/model -m {model} --max-steps 2 --batch-size 2"
CASES = [
    # index build: corpus files
    ("build-invalid-utf8", f"{BUILD} --name x --corpus {{w}}/bad_utf8.jsonl", r"bad_utf8\.jsonl:2: invalid UTF-8"),
    (
        "build-plain-file-named-gz",
        f"{BUILD} --name x --corpus {{w}}/not_gzip.jsonl.gz",
        r"not_gzip\.jsonl\.gz: cannot read",
    ),
    ("build-truncated-gz", f"{BUILD} --name x --corpus {{w}}/truncated.jsonl.gz", r"truncated\.jsonl\.gz: cannot read"),
    (
        "build-lone-surrogate",
        f"{BUILD} --name x --corpus {{w}}/surrogate.jsonl",
        r"surrogate\.jsonl:2: field 'text': lone surrogate",
    ),
    ("build-bad-json", f"{BUILD} --name x --corpus {{w}}/bad_json.jsonl", r"bad_json\.jsonl:2: invalid JSON"),
    (
        "build-missing-id",
        f"{BUILD} --name x --corpus {{w}}/missing_id.jsonl",
        r"missing_id\.jsonl:1: field '_id': missing",
    ),
    ("build-duplicate-id", f"{BUILD} --name x --corpus {{w}}/dup_id.jsonl", r"dup_id\.jsonl:2: field '_id': duplicate"),
    (
        "build-empty-text",
        f"{BUILD} --name x --corpus {{w}}/empty_text.jsonl",
        r"empty_text\.jsonl:2: field 'text': empty",
    ),
    (
        "build-not-an-object",
        f"{BUILD} --name x --corpus {{w}}/not_object.jsonl",
        r"not_object\.jsonl:1: expected a JSON object",
    ),
    ("build-no-documents", f"{BUILD} --name x --corpus {{w}}/empty.jsonl", r"empty\.jsonl: no documents"),
    ("build-no-corpus", f"{BUILD} --name x --corpus {{w}}/nowhere.jsonl", r"nowhere\.jsonl: no such corpus file"),
    # index build: names, destinations, models, options
    (
        "build-name-escapes",
        f"{BUILD} --corpus {{beir}} --name ../escaped",
        r"index name '\.\./escaped' holds a path separator",
    ),
    ("build-name-with-slash", f"{BUILD} --corpus {{beir}} --name a/b", r"index name 'a/b' holds a path separator"),
    ("build-hidden-name", f"{BUILD} --corpus {{beir}} --name .hidden", r"index name '\.hidden' starts with '\.'"),
    (
        "build-overwrite-non-index",
        f"{BUILD} --corpus {{beir}} --name notindex --overwrite",
        r"notindex: is not an embedtune index",
    ),
    ("build-exists", f"{BUILD} --corpus {{beir}} --name good", r"good: already exists \(pass --overwrite"),
    (
        "build-indexes-dir-under-file",
        "index build -m {model} --corpus {beir} --name x --indexes-dir {w}/afile/idx",
        r"afile/idx: cannot be written \(.*afile is a file",
    ),
    (
        "build-truncated-weights",
        "index build -m {w}/truncated-model --corpus {beir} --name x --indexes-dir {idx}",
        r"truncated-model/model\.safetensors: damaged or truncated",
    ),
    (
        "build-garbage-weights",
        "index build -m {w}/garbage-model --corpus {beir} --name x --indexes-dir {idx}",
        r"garbage-model/model\.safetensors: damaged or truncated",
    ),
    (
        "build-no-model",
        "index build -m {w}/nomodel --corpus {beir} --name x --indexes-dir {idx}",
        r"nomodel: no such model directory",
    ),
    (
        "build-bad-type",
        f"{BUILD} --corpus {{beir}} --name x --type ivf",
        r"--type \(index_type: 'ivf' is not one of auto, flat",
    ),
    (
        "build-batch-size-0",
        f"{BUILD} --corpus {{beir}} --name x --batch-size 0",
        r"--batch-size \(batch_size: must be at least 1, got 0\)",
    ),
    ("build-nlist-too-large", f"{BUILD} --corpus {{beir}} --name x --type ivf-flat --nlist 1000", r"nlist"),
    # index add
    (
        "add-invalid-utf8",
        "index add good --corpus {w}/bad_utf8.jsonl --indexes-dir {idx}",
        r"bad_utf8\.jsonl:2: invalid UTF-8",
    ),
    (
        "add-plain-file-named-gz",
        "index add good --corpus {w}/not_gzip.jsonl.gz --indexes-dir {idx}",
        r"not_gzip\.jsonl\.gz: cannot read",
    ),
    (
        "add-truncated-gz",
        "index add good --corpus {w}/truncated.jsonl.gz --indexes-dir {idx}",
        r"truncated\.jsonl\.gz: cannot read",
    ),
    (
        "add-lone-surrogate",
        "index add good --corpus {w}/surrogate.jsonl --indexes-dir {idx}",
        r"surrogate\.jsonl:2: field 'text': lone surrogate",
    ),
    (
        "add-duplicate-id",
        "index add good --corpus {w}/dup_id.jsonl --indexes-dir {idx}",
        r"dup_id\.jsonl:2: field '_id': duplicate",
    ),
    ("add-no-index", "index add nope --corpus {beir} --indexes-dir {idx}", r"no index 'nope'"),
    (
        "add-damaged-index",
        "index add faiss-flipped --corpus {beir} --indexes-dir {idx}",
        r"index\.1\.faiss: does not match the manifest",
    ),
    ("add-other-model", "index add good --corpus {beir} -m {bert} --indexes-dir {idx}", r"was built by the model at"),
    # index remove / info
    ("remove-nothing", "index remove good --indexes-dir {idx}", r"no document ids to remove"),
    (
        "remove-damaged-store",
        "index remove store-flipped nginx --indexes-dir {idx}",
        r"docs\.1\.sqlite: does not match the manifest",
    ),
    (
        "info-damaged-faiss",
        "index info faiss-flipped --indexes-dir {idx}",
        r"index\.1\.faiss: does not match the manifest \(checksum",
    ),
    (
        "info-damaged-store",
        "index info store-flipped --indexes-dir {idx}",
        r"docs\.1\.sqlite: does not match the manifest \(checksum",
    ),
    ("info-bad-manifest", "index info bad-manifest --indexes-dir {idx}", r"manifest\.json: unreadable index manifest"),
    ("info-old-format", "index info format-1 --indexes-dir {idx}", r"manifest\.json: index format 1"),
    ("info-incomplete", "index info incomplete --indexes-dir {idx}", r"index is incomplete \(no docs\.1\.sqlite\)"),
    ("info-no-index", "index info nope --indexes-dir {idx}", r"no index 'nope'"),
    # search
    ("search-empty-query", "search '   ' --index good --indexes-dir {idx}", r"the query is empty"),
    ("search-surrogate-query", "search $'bad \\udcff' --index good --indexes-dir {idx}", r"lone surrogate"),
    (
        "search-queries-invalid-utf8",
        "search --queries {w}/queries_utf8.txt --index good --indexes-dir {idx}",
        r"queries_utf8\.txt:2: invalid UTF-8",
    ),
    (
        "search-queries-surrogate",
        "search --queries {w}/queries_surrogate.jsonl --index good --indexes-dir {idx}",
        r"queries_surrogate\.jsonl:1: field 'text': lone surrogate",
    ),
    (
        "search-queries-empty",
        "search --queries {w}/queries_empty.txt --index good --indexes-dir {idx}",
        r"queries_empty\.txt: no queries",
    ),
    (
        "search-queries-no-text",
        "search --queries {w}/queries_notext.jsonl --index good --indexes-dir {idx}",
        r"queries_notext\.jsonl:1: field 'text'",
    ),
    (
        "search-damaged-faiss",
        "search web --index faiss-flipped --indexes-dir {idx}",
        r"index\.1\.faiss: does not match the manifest",
    ),
    (
        "search-damaged-store-large-k",
        "search web -k 100000 --index store-flipped --indexes-dir {idx}",
        r"docs\.1\.sqlite: does not match the manifest",
    ),
    ("search-no-query", "search --index good --indexes-dir {idx}", r"give either QUERY or --queries FILE"),
    ("search-k-0", "search web -k 0 --index good --indexes-dir {idx}", r"Invalid value for '-k'"),
    (
        "search-nprobe-on-flat",
        "search web --nprobe 4 --index good --indexes-dir {idx}",
        r"nprobe does not apply to a flat index",
    ),
    ("search-other-model", "search web -m {bert} --index good --indexes-dir {idx}", r"was built by the model at"),
    # eval
    ("eval-missing-split", "eval -m {model} --data {beir} --split validation", r"validation\.tsv: no such qrels file"),
    ("eval-bad-metric", "eval -m {model} --data {beir} --metrics ndgc", r"ndgc"),
    ("eval-k-0", "eval -m {model} --data {beir} -k 0", r"^Error: -k \(ks: must be at least 1, got 0\)$"),
    (
        "eval-json-out-under-file",
        "eval --bm25 --data {beir} --json-out {w}/afile/r.json",
        r"afile/r\.json: cannot be written",
    ),
    ("eval-plot-under-file", "eval --bm25 --data {beir} --plot {w}/afile/r.png", r"afile/r\.png: cannot be written"),
    (
        "eval-damaged-index",
        "eval --index faiss-flipped --indexes-dir {idx} --data {beir}",
        r"index\.1\.faiss: does not match",
    ),
    ("eval-no-data", "eval --bm25 --data {w}/nowhere", r"nowhere: no such dataset folder"),
    (
        "eval-qrels-unknown-doc",
        "eval --bm25 --data {w}/beir-unknown-doc",
        r"test\.tsv:2: field 'corpus-id': unknown document id 'nowhere'",
    ),
    ("eval-qrels-bad-header", "eval --bm25 --data {w}/beir-bad-header", r"test\.tsv:1: expected header"),
    ("eval-qrels-score", "eval --bm25 --data {w}/beir-score", r"test\.tsv:2: field 'score': not an integer"),
    (
        "eval-corpus-surrogate",
        "eval --bm25 --data {w}/beir-surrogate",
        r"corpus\.jsonl:9: field 'text': lone surrogate",
    ),
    (
        "eval-truncated-weights",
        "eval -m {w}/truncated-model --data {beir}",
        r"model\.safetensors: damaged or truncated",
    ),
    # mine
    (
        "mine-wrong-suffix",
        "mine -o {w}/out/rows.txt --data {beir} -m {model}",
        r"rows\.txt: the mined file must end in \.jsonl",
    ),
    (
        "mine-output-under-file",
        "mine -o {w}/afile/rows.jsonl --data {beir} -m {model}",
        r"afile/rows\.jsonl: cannot be written",
    ),
    ("mine-output-exists", "mine -o {w}/out/rows.jsonl --data {beir} -m {model}", r"rows\.jsonl: already exists"),
    (
        "eval-index-with-encoding-options",
        "eval --index good --indexes-dir {idx} --data {beir} --max-seq-length 32",
        r"--max-seq-length: only used for --model systems",
    ),
    (
        "mine-index-with-encoding-options",
        "mine -o {w}/out/new.jsonl --data {beir} --index good --indexes-dir {idx} --precision bf16 --batch-size 8",
        r"--precision, --batch-size: not used with --index",
    ),
    (
        "mine-missing-split",
        "mine -o {w}/out/new.jsonl --data {beir} -m {model} --split nope",
        r"nope\.tsv: no such qrels file",
    ),
    (
        "mine-rank-window",
        "mine -o {w}/out/new.jsonl --data {beir} -m {model} --min-rank 10 --max-rank 5",
        r"min_rank|max_rank|--max-rank",
    ),
    (
        "mine-corpus-surrogate",
        "mine -o {w}/out/new.jsonl --data {w}/beir-surrogate -m {model}",
        r"corpus\.jsonl:9: field 'text': lone surrogate",
    ),
    # train
    (
        "train-csv-unclosed-quote",
        f"{TRAIN} --data {{w}}/unclosed.csv",
        r"unclosed\.csv:2: a quoted field runs over lines 2-4",
    ),
    (
        "train-csv-extra-field",
        f"{TRAIN} --data {{w}}/extra.csv",
        r"extra\.csv:3: expected 2 comma-separated fields, got 3",
    ),
    (
        "train-lone-surrogate",
        f"{TRAIN} --data {{w}}/pairs_surrogate.jsonl",
        r"pairs_surrogate\.jsonl:2: field 'positive': lone surrogate",
    ),
    (
        "train-unknown-columns",
        f"{TRAIN} --data {{w}}/pairs_nopositive.jsonl",
        r"pairs_nopositive\.jsonl: cannot tell the format",
    ),
    ("train-score-out-of-range", f"{TRAIN} --data {{w}}/scored.tsv", r"scored\.tsv:3: field 'score': score 7 outside"),
    ("train-no-data", f"{TRAIN} --data {{w}}/nowhere.jsonl", r"nowhere\.jsonl: no such file or folder"),
    ("train-yaml-batch-1", "train --config {w}/batch1.yaml", r"batch_size"),
    ("train-yaml-negative-steps", "train --config {w}/steps.yaml", r"max_steps"),
    ("train-yaml-lr-string", "train --config {w}/lr_string.yaml", r"learning_rate"),
    ("train-yaml-batch-word", "train --config {w}/batch_two.yaml", r"batch_size"),
    ("train-yaml-loss-number", "train --config {w}/loss42.yaml", r"loss"),
    ("train-yaml-temperature-0", "train --config {w}/temp0.yaml", r"temperature"),
    ("train-yaml-unknown-key", "train --config {w}/unknown.yaml", r"learning_rat"),
    ("train-yaml-not-mapping", "train --config {w}/list.yaml", r"list\.yaml: expected a mapping"),
    (
        "train-missing-dev-split",
        f"{TRAIN} --data {{beir}} --dev-split validation --metric mrr@10",
        r"dev_split: no split 'validation' in .*qrels \(splits there: dev, test, train\)",
    ),
    ("train-early-stopping-no-dev", f"{TRAIN} --data {{beir}} --no-dev --early-stopping 2", r"early_stopping_patience"),
    (
        "train-early-stopping-file-data",
        f"{TRAIN} --data {{w}}/extra.csv --early-stopping 2",
        r"extra\.csv:3|early_stopping_patience",
    ),
    (
        "train-output-under-file",
        "train -o {w}/afile/model -m {model} --data {beir} --max-steps 2",
        r"afile/model: cannot be written",
    ),
    (
        "train-output-exists",
        "train -o {w}/out/existing -m {model} --data {beir} --max-steps 2",
        r"existing: already exists",
    ),
    (
        "train-mine-output-exists",
        "train -o {w}/out/existing -m {model} --data {beir} --max-steps 2 --mine",
        r"existing: already exists",
    ),
    (
        "train-truncated-weights",
        "train -o {w}/out/model -m {w}/truncated-model --data {beir} --max-steps 2",
        r"model\.safetensors: damaged or truncated",
    ),
    ("train-batch-size-1", f"{TRAIN} --data {{beir}} --batch-size 1", r"--batch-size \(batch_size: .* batches of 1"),
    ("build-empty-name", f"{BUILD} --corpus {{beir}} --name ''", r"index name"),
    (
        "remove-ids-file-invalid-utf8",
        "index remove good --indexes-dir {idx} --ids-file {w}/ids_utf8.txt",
        r"ids_utf8\.txt:2",
    ),
]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(("command", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_located_line(world, command, expected, monkeypatch):
    import re

    root = Path(world["w"])
    monkeypatch.chdir(root / "cwd")
    args = shlex.split(command.format(**world).replace("$'bad \\udcff'", "BAD_QUERY"))
    args = ["bad \udcff" if a == "BAD_QUERY" else a for a in args]
    before = _tree(root)
    result = CliRunner().invoke(main, args)
    output = result.output
    assert result.exit_code != 0, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    assert re.search(expected, errors[0]), errors[0]
    assert _tree(root) == before, sorted(_tree(root) ^ before)
