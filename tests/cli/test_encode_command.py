"""``embedtune encode``: texts, jsonl or a BEIR corpus into .npy or .parquet vectors that equal the
encoder's own, with their ids, the model's prompts, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import CORPUS, assert_one_line_error, run

from embedtune.encoding import Encoder

EXACT = ("--precision", "fp32", "--no-cache")


def _expected(model, texts: list[str], prompt_name: str | None = None) -> np.ndarray:
    return Encoder(model, "fp32").encode(texts, show_progress=False, prompt_name=prompt_name)


def test_text_file_to_npy_equals_the_encoder(tmp_path, tiny_st, tiny_model):
    source = tmp_path / "texts.txt"
    source.write_text("web server\n\n  text editor  \nweb server\n")
    out = tmp_path / "out" / "vectors.npy"
    result = run("encode", source, "-o", out, "-m", tiny_st, *EXACT)
    assert "3 texts x 32 dims (fp32) written to" in result.stdout and "vectors.ids.json" in result.stdout
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 32)
    np.testing.assert_allclose(vectors, _expected(tiny_model, ["web server", "text editor", "web server"]), atol=1e-6)
    assert json.loads((tmp_path / "out" / "vectors.ids.json").read_text()) == ["1", "3", "4"]  # line numbers
    assert sorted(p.name for p in out.parent.iterdir()) == ["vectors.ids.json", "vectors.npy"]  # no temporaries


def test_jsonl_ids_titles_and_json_output(tmp_path, tiny_st, tiny_model):
    source = tmp_path / "rows.jsonl"
    rows = [{"_id": "a", "text": "web server"}, {"id": 7, "title": "Vim", "text": "text editor"}, {"text": "zip"}]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "v.npy"
    doc = json.loads(run("encode", source, "-o", out, "-m", tiny_st, *EXACT, "--json").stdout)
    assert doc["schema"] == "embedtune.encode/1" and doc["input_kind"] == "jsonl"
    assert (doc["count"], doc["dimension"], doc["precision"]) == (3, 32, "fp32")
    assert doc["output"] == str(out) and doc["ids_file"] == str(tmp_path / "v.ids.json")
    assert json.loads((tmp_path / "v.ids.json").read_text()) == ["a", "7", "3"]
    np.testing.assert_allclose(np.load(out), _expected(tiny_model, ["web server", "Vim text editor", "zip"]), atol=1e-6)


def test_beir_corpus_to_parquet(tmp_path, tiny_st, tiny_model, beir_dir):
    import pyarrow.parquet as pq

    out = tmp_path / "corpus.parquet"
    run("encode", beir_dir, "-o", out, "-m", tiny_st, *EXACT)
    table = pq.read_table(out)
    assert table.column_names == ["id", "vector"] and table.column("id").to_pylist() == list(CORPUS)
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors, _expected(tiny_model, list(CORPUS.values())), atol=1e-6)
    assert not (tmp_path / "corpus.ids.json").exists()


def test_prompts_are_the_models_own(tmp_path, tiny_st):
    from embedtune.models import load_model

    prompted = tmp_path / "prompted"
    shutil.copytree(tiny_st, prompted)
    config = prompted / "config_sentence_transformers.json"
    config.write_text(
        json.dumps(json.loads(config.read_text()) | {"prompts": {"query": "query: ", "document": "passage: "}})
    )
    source = tmp_path / "t.txt"
    source.write_text("web server\ntext editor\n")
    model = load_model(prompted, device="cpu")
    for prompt, prompt_name in (("query", "query"), ("document", "document"), ("none", None)):
        out = tmp_path / f"{prompt}.npy"
        doc = json.loads(run("encode", source, "-o", out, "-m", prompted, "--prompt", prompt, *EXACT, "--json").stdout)
        assert doc["prompt_name"] == prompt_name
        np.testing.assert_allclose(
            np.load(out), _expected(model, ["web server", "text editor"], prompt_name), atol=1e-6
        )
    assert not np.allclose(np.load(tmp_path / "query.npy"), np.load(tmp_path / "none.npy"))


@pytest.fixture
def bad(tmp_path):
    files = {
        "no_text.jsonl": '{"_id": "a", "text": "ok"}\n{"_id": "b"}\n',
        "dup.jsonl": '{"_id": "a", "text": "ok"}\n{"_id": "a", "text": "again"}\n',
        "bad_json.jsonl": '{"text": "ok"}\n{"text": \n',
        "empty.txt": "\n  \n",
        "table.csv": "id,text\n1,hello\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "bad_utf8.txt").write_bytes(b"fine\ncaf\xe9\n")
    (tmp_path / "exists.npy").write_bytes(b"mine")
    (tmp_path / "good.txt").write_text("hello\n")
    return tmp_path


@pytest.mark.parametrize(
    ("source", "output", "expected"),
    [
        ("nowhere.txt", "o.npy", r"nowhere\.txt: no such file or folder"),
        ("no_text.jsonl", "o.npy", r"no_text\.jsonl:2: field 'text': missing or empty"),
        ("dup.jsonl", "o.npy", r"dup\.jsonl:2: field '_id': duplicate id 'a'"),
        ("bad_json.jsonl", "o.npy", r"bad_json\.jsonl:2: invalid JSON"),
        ("bad_utf8.txt", "o.npy", r"bad_utf8\.txt:2: invalid UTF-8"),
        ("empty.txt", "o.npy", r"empty\.txt: no texts"),
        ("table.csv", "o.npy", r"table\.csv: not a file of texts"),
        ("good.txt", "o.txt", r"o\.txt: the vectors file must end in \.npy or \.parquet"),
        ("good.txt", "exists.npy", r"exists\.npy: already exists \(pass --overwrite"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(bad, tiny_st, source, output, expected):
    before = sorted(p.name for p in bad.iterdir())
    result = run("encode", bad / source, "-o", bad / output, "-m", tiny_st, ok=False)
    assert_one_line_error(result, expected)
    assert sorted(p.name for p in bad.iterdir()) == before
    assert (bad / "exists.npy").read_bytes() == b"mine"


def test_overwrite_replaces_both_files(bad, tiny_st):
    run("encode", bad / "good.txt", "-o", bad / "exists.npy", "-m", tiny_st, "--overwrite", "-q")
    assert np.load(bad / "exists.npy").shape == (1, 32) and json.loads((bad / "exists.ids.json").read_text()) == ["1"]


def test_a_beir_folder_is_read_as_index_build_reads_it(tmp_path, tiny_st):
    folder = tmp_path / "beir"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "a", "title": "T", "text": "ok"}\n{"text": "no id"}\n')
    encode = run("encode", folder, "-o", tmp_path / "o.npy", "-m", tiny_st, ok=False)
    build = run("index", "build", "--corpus", folder, "-m", tiny_st, "--indexes-dir", tmp_path / "i", ok=False)
    for result in (encode, build):
        assert_one_line_error(result, r"corpus\.jsonl:2: field '_id': missing")
