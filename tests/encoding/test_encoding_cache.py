"""The encoding cache: hits, misses on anything that changes a vector, its folder, failures, concurrency."""

from __future__ import annotations

import multiprocessing
import sqlite3
from contextlib import closing

import numpy as np
import pytest
import torch

from embedtune.encoding import Encoder, EncodingCache, default_cache_dir
from embedtune.errors import EmbedtuneWarning
from embedtune.models import load_model


def test_cache_serves_unchanged_texts_without_encoding_them(model, texts, tmp_path, seen):
    first = Encoder(model, "fp32", cache=tmp_path).encode(texts, show_progress=False)
    assert len(seen) == len(texts)
    seen.clear()
    changed = [*texts[:-1], "a text never seen before"]
    encoder = Encoder(model, "fp32", cache=tmp_path)  # a new encoder, as in a new process
    again = encoder.encode(changed, show_progress=False)
    assert seen == ["a text never seen before"]
    assert np.array_equal(again[:-1], first[:-1])  # bit-identical to what was encoded
    assert (encoder.stats.cached, encoder.stats.encoded) == (len(texts) - 1, 1)


def test_an_encoder_made_after_the_model_has_encoded_hits_the_cache(tiny_st, texts, tmp_path, seen):
    model = load_model(tiny_st, device="cpu")
    Encoder(model, "fp32", cache=tmp_path).encode(texts, show_progress=False)
    seen.clear()
    Encoder(model, "fp32", cache=tmp_path).encode(texts, show_progress=False)
    assert seen == []


def test_cache_misses_when_anything_that_changes_a_vector_changes(tiny_bert, texts, tmp_path, seen):
    """Each variant differs from the base in one setting only, and must miss (none served stale vectors).

    The token limit is changed on the very model object after loading, as ``index build
    --max-seq-length`` does: sentence-transformers does not record it in its module configs.
    """
    sample = [" ".join(texts)] * 1 + texts[:3]  # the first text is long enough for any limit to cut it

    def base():
        return load_model(tiny_bert, device="cpu")

    def encode(model, precision="fp32", prompt_name=None, pack=True) -> np.ndarray:
        seen.clear()
        vectors = Encoder(model, precision, cache=tmp_path, pack=pack).encode(
            sample, prompt_name=prompt_name, show_progress=False
        )
        return vectors

    reference = encode(base())
    assert seen == sample
    encode(base())
    assert seen == [], "the unchanged model must hit"

    shorter = base()
    shorter.max_seq_length = 16
    with_prompt = base()
    with_prompt.prompts = {"query": "query: "}
    changed_weights = base()
    with torch.no_grad():
        changed_weights[0].auto_model.encoder.layer[0].output.dense.weight[0, 0] += 1.0
    variants = {
        "token limit": lambda: encode(shorter),
        "pooling": lambda: encode(load_model(tiny_bert, device="cpu", pooling="cls")),
        "normalisation": lambda: encode(load_model(tiny_bert, device="cpu", normalize=False)),
        "prompt": lambda: encode(with_prompt, prompt_name="query"),
        "precision": lambda: encode(base(), "bf16"),
        "weights": lambda: encode(changed_weights),
    }
    for setting, run in variants.items():
        vectors = run()
        assert seen == sample, f"changing the {setting} was served from the cache"
        if setting not in ("precision", "normalisation"):  # the encoder re-normalises every vector in fp32
            assert not np.allclose(vectors, reference, atol=1e-4), f"{setting} should change the vectors"
    # The token limit read at each call: a limit changed after the encoder was made misses too.
    model = base()
    encoder = Encoder(model, "fp32", cache=tmp_path)
    encoder.encode(sample, show_progress=False)
    model.max_seq_length = 24
    seen.clear()
    encoder.encode(sample, show_progress=False)
    assert seen == sample


def test_default_cache_location_and_no_cache(model, texts, tmp_path, monkeypatch, encoding_cache_dir):
    assert default_cache_dir() == encoding_cache_dir  # $EMBEDTUNE_CACHE, set for every test
    monkeypatch.delenv("EMBEDTUNE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "embedtune" / "encodings"
    assert Encoder(model, "fp32", cache=None).cache is None and Encoder(model, "fp32", cache=False).cache is None
    Encoder(model, "fp32", cache=True).encode(texts[:2], show_progress=False)
    assert len(list((tmp_path / "xdg" / "embedtune" / "encodings").glob("*.sqlite"))) == 1


def test_an_unusable_cache_warns_and_encoding_goes_on(model, texts, tmp_path, reference):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.warns(EmbedtuneWarning, match="encoding cache .* is unusable"):
        vectors = Encoder(model, "fp32", cache=blocker).encode(texts, show_progress=False)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


def test_spaces_skips_files_that_are_not_vector_spaces_with_a_warning(tmp_path):
    """``embedtune cache info`` lists the readable spaces, whatever else lies in the folder."""
    cache = EncodingCache(tmp_path)
    space = "a" * 64
    cache.put(space, {"precision": "fp32"}, [bytes(32)], np.ones((1, 4), dtype=np.float32))
    cache.close()
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database " * 100)
    (tmp_path / "empty.sqlite").write_bytes(b"")  # SQLite reads a 0-byte file as a database without tables
    with closing(sqlite3.connect(tmp_path / "tableless.sqlite")) as conn:
        conn.execute("PRAGMA user_version = 7")  # a real SQLite file, without the cache's tables
    with closing(sqlite3.connect(tmp_path / "foreign.sqlite")) as conn, conn:
        conn.execute("CREATE TABLE vectors (text_sha256 BLOB, vector BLOB)")
        conn.execute("CREATE TABLE space (key TEXT, value TEXT)")
        conn.execute("INSERT INTO space VALUES ('model', 'not JSON')")
    assert (tmp_path / "tableless.sqlite").stat().st_size > 0
    with pytest.warns(EmbedtuneWarning, match="is not a readable vector space") as caught:
        spaces = cache.spaces()
    assert [s.path for s in spaces] == [cache.path(space)]
    assert (spaces[0].texts, spaces[0].description) == (1, {"precision": "fp32"})
    skipped = sorted(f.name for f in tmp_path.glob("*.sqlite") if any(f"{f} is not" in str(w.message) for w in caught))
    assert skipped == ["empty.sqlite", "foreign.sqlite", "garbage.sqlite", "tableless.sqlite"]
    assert cache.clear()[0] == 5 and not list(tmp_path.glob("*.sqlite"))


def _write_keys(directory: str, start: int) -> None:
    cache = EncodingCache(directory)
    for first in range(start, start + 200, 10):
        keys = [n.to_bytes(4, "big") + bytes(28) for n in range(first, first + 10)]
        cache.put("space", {}, keys, np.full((10, 4), first, dtype=np.float32))
    cache.close()


def test_two_processes_can_fill_one_cache_at_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_write_keys, args=(str(tmp_path), start)) for start in (0, 100)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    conn = sqlite3.connect(EncodingCache(tmp_path).path("space"))
    assert conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 300  # 0..299, overlap kept once
    conn.close()
