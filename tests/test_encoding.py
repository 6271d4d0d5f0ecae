"""The encoder: each precision against fp32, fallbacks, length-sorted batches and the cache."""

from __future__ import annotations

import multiprocessing
import sqlite3

import numpy as np
import pytest
import torch
from helpers import CORPUS, QUERIES

import embedtune.encoding as encoding
from embedtune.encoding import Encoder, resolve_precision, resolve_training_precision
from embedtune.encoding_cache import EncodingCache, default_cache_dir
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.models import load_model
from embedtune.train import TrainConfig

TEXTS = [*CORPUS.values(), *QUERIES.values()]


@pytest.fixture(scope="module")
def model(tiny_st):
    return load_model(tiny_st, device="cpu")


@pytest.fixture(scope="module")
def reference(model) -> np.ndarray:
    """sentence-transformers' own fp32 encode(), the vectors every precision is held to."""
    return model.encode(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)


def spy_on_model(monkeypatch) -> list[str]:
    """Record every text an Encoder actually runs through its model."""
    seen: list[str] = []
    run = Encoder._run

    def counting(self, texts, *args):
        seen.extend(texts)
        return run(self, texts, *args)

    monkeypatch.setattr(Encoder, "_run", counting)
    return seen


@pytest.mark.parametrize(("precision", "bound"), [("fp32", 0.99999), ("bf16", 0.999), ("int8", 0.99)])
def test_each_precision_agrees_with_fp32(model, reference, precision, bound):
    encoder = Encoder(model, precision)
    vectors = encoder.encode(TEXTS, batch_size=4, show_progress=False)
    assert encoder.precision == precision and vectors.dtype == np.float32 and vectors.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # normalised in fp32
    assert np.min(np.sum(vectors * reference, axis=1)) > bound
    # Converted copies only: the caller's model (perhaps being trained) keeps its fp32 weights.
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_int8_quantises_the_linear_layers_but_not_the_down_projections(model):
    from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear

    modules = dict(Encoder(model, "int8").model.named_modules())
    layer = next(name for name in modules if name.endswith("layer.0"))
    assert isinstance(modules[f"{layer}.attention.self.query"], QuantizedLinear)
    assert isinstance(modules[f"{layer}.intermediate.dense"], QuantizedLinear)
    assert type(modules[f"{layer}.output.dense"]) is torch.nn.Linear  # the feed-forward output (64 -> 32)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU's oneDNN has no native bf16")
def test_bf16_runs_on_packed_linears_with_gelu_fused_and_agrees_with_plain_bf16(model):
    packed, plain = Encoder(model, "bf16"), Encoder(model, "bf16", pack=False)
    layer = packed.model[0].auto_model.encoder.layer[0]
    assert isinstance(layer.attention.self.query, encoding._PackedLinear)
    assert layer.intermediate.dense.attr == "gelu"
    assert isinstance(layer.intermediate.intermediate_act_fn, torch.nn.Identity)
    assert layer.output.dense.attr == "none"  # the down-projection has no activation after it
    assert isinstance(plain.model[0].auto_model.encoder.layer[0].attention.self.query, torch.nn.Linear)
    packed_vectors, plain_vectors = (e.encode(TEXTS, batch_size=4, show_progress=False) for e in (packed, plain))
    assert np.min(np.sum(packed_vectors * plain_vectors, axis=1)) > 0.9999
    single = packed.encode(TEXTS[:1], show_progress=False)  # batch 1: no length pass, same vector
    assert np.sum(single[0] * packed_vectors[0]) > 0.9999


def test_half_precision_pads_batches_to_a_multiple_of_8_tokens_without_changing_vectors(model, tiny_bert, monkeypatch):
    assert Encoder(model, "fp32").length_step == 1
    assert Encoder(load_model(tiny_bert, device="cpu", max_seq_length=30), "bf16").length_step == 1  # 30: not 8k
    encoder = Encoder(model, "bf16")
    widths: list[int] = []
    forward = type(encoder.model).forward
    monkeypatch.setattr(
        type(encoder.model), "forward", lambda m, f, **kw: widths.append(f["input_ids"].shape[1]) or forward(m, f, **kw)
    )
    padded = encoder.encode(TEXTS, batch_size=4, show_progress=False)
    assert encoder.length_step == 8 and widths and all(w % 8 == 0 for w in widths)
    encoder.length_step = 1
    unpadded = encoder.encode(TEXTS, batch_size=4, show_progress=False)
    assert any(w % 8 for w in widths[len(widths) // 2 :])  # the tiny texts are not all 8k tokens long
    assert np.min(np.sum(padded * unpadded, axis=1)) > 0.9999


def test_impossible_precisions_fall_back_with_a_warning(model, monkeypatch):
    monkeypatch.setattr(encoding, "cpu_has_amx_bf16", lambda: False)
    with pytest.warns(EmbedtuneWarning, match="fp16 runs on CUDA GPUs only; encoding in fp32 on cpu"):
        assert Encoder(model, "fp16").precision == "fp32"
    monkeypatch.setattr(encoding, "cpu_has_amx_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    with pytest.warns(EmbedtuneWarning, match="fp16 runs on CUDA GPUs only; encoding in bf16"):
        assert resolve_precision("fp16", "cpu") == "bf16"
    with pytest.raises(EmbedtuneError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", "cpu")


def test_training_refuses_encoding_only_precisions():
    assert resolve_training_precision("fp32", "cpu") == "fp32"
    for precision in ("int8", "fp16"):
        with pytest.raises(EmbedtuneError, match=f"precision '{precision}' is for encoding only"):
            resolve_training_precision(precision, "cpu")
        with pytest.raises(EmbedtuneError, match="for encoding only"):  # before any mining or loading
            TrainConfig(output="x", precision=precision)


def test_batches_hold_texts_of_similar_token_counts_and_results_keep_input_order(model, reference, monkeypatch):
    encoder = Encoder(model, "fp32")
    batches: list[list[str]] = []
    preprocess = encoder.model.preprocess

    def recording(texts, **kwargs):
        batches.append(list(texts))
        return preprocess(texts, **kwargs)

    monkeypatch.setattr(encoder.model, "preprocess", recording)
    vectors = encoder.encode(TEXTS, batch_size=3, show_progress=False)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    lengths = [[len(model.tokenizer(t)["input_ids"]) for t in batch] for batch in batches]
    assert [n for batch in lengths for n in batch] == sorted((n for b in lengths for n in b), reverse=True)
    assert sorted(t for b in batches for t in b) == sorted(TEXTS)


def test_repeated_texts_are_encoded_once(model, monkeypatch):
    seen = spy_on_model(monkeypatch)
    encoder = Encoder(model, "fp32")
    vectors = encoder.encode(["web server", "text editor", "web server"], show_progress=False)
    assert seen == ["web server", "text editor"] and np.array_equal(vectors[0], vectors[2])
    assert (encoder.stats.texts, encoder.stats.encoded) == (3, 2)


def test_tokenising_ahead_gives_the_same_vectors(model, reference):
    encoder = Encoder(model, "fp32")
    encoder.overlap = True  # what a GPU does; here on the CPU for the test
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=4, show_progress=False), reference, atol=1e-5)


def test_prompts_and_unknown_prompts(model):
    encoder = Encoder(model, "fp32")
    with pytest.raises(EmbedtuneError, match="no prompt 'instruction'"):
        encoder.encode(["x"], prompt_name="instruction")
    saved = model.prompts
    model.prompts = {"query": "query: "}
    try:
        prompted = Encoder(model, "fp32").encode(["web server"], prompt_name="query", show_progress=False)
        plain = encoder.encode(["query: web server"], show_progress=False)
        np.testing.assert_allclose(prompted, plain, atol=1e-6)
    finally:
        model.prompts = saved


# --- the cache ----------------------------------------------------------------------------------


def test_cache_serves_unchanged_texts_without_encoding_them(model, tmp_path, monkeypatch):
    seen = spy_on_model(monkeypatch)
    first = Encoder(model, "fp32", cache=tmp_path).encode(TEXTS, show_progress=False)
    assert len(seen) == len(TEXTS)
    seen.clear()
    changed = [*TEXTS[:-1], "a text never seen before"]
    encoder = Encoder(model, "fp32", cache=tmp_path)  # a new encoder, as in a new process
    again = encoder.encode(changed, show_progress=False)
    assert seen == ["a text never seen before"]
    assert np.array_equal(again[:-1], first[:-1])  # bit-identical to what was encoded
    assert (encoder.stats.cached, encoder.stats.encoded) == (len(TEXTS) - 1, 1)


def test_cache_misses_when_anything_that_changes_a_vector_changes(tiny_bert, tmp_path, monkeypatch):
    """Each variant differs from the base in one setting only, and must miss (none served stale vectors).

    The token limit is changed on the very model object after loading, as ``index build
    --max-seq-length`` does: sentence-transformers does not record it in its module configs.
    """
    seen = spy_on_model(monkeypatch)
    texts = [" ".join(TEXTS)] * 1 + TEXTS[:3]  # the first text is long enough for any limit to cut it

    def base():
        return load_model(tiny_bert, device="cpu")

    def encode(model, precision="fp32", prompt_name=None, pack=True) -> np.ndarray:
        seen.clear()
        vectors = Encoder(model, precision, cache=tmp_path, pack=pack).encode(
            texts, prompt_name=prompt_name, show_progress=False
        )
        return vectors

    reference = encode(base())
    assert seen == texts
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
        assert seen == texts, f"changing the {setting} was served from the cache"
        if setting not in ("precision", "normalisation"):  # the encoder re-normalises every vector in fp32
            assert not np.allclose(vectors, reference, atol=1e-4), f"{setting} should change the vectors"
    # The token limit read at each call: a limit changed after the encoder was made misses too.
    model = base()
    encoder = Encoder(model, "fp32", cache=tmp_path)
    encoder.encode(texts, show_progress=False)
    model.max_seq_length = 24
    seen.clear()
    encoder.encode(texts, show_progress=False)
    assert seen == texts


def test_default_cache_location_and_no_cache(model, tmp_path, monkeypatch, encoding_cache_dir):
    assert default_cache_dir() == encoding_cache_dir  # $EMBEDTUNE_CACHE, set for every test
    monkeypatch.delenv("EMBEDTUNE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "embedtune" / "encodings"
    assert Encoder(model, "fp32", cache=None).cache is None and Encoder(model, "fp32", cache=False).cache is None
    Encoder(model, "fp32", cache=True).encode(TEXTS[:2], show_progress=False)
    assert len(list((tmp_path / "xdg" / "embedtune" / "encodings").glob("*.sqlite"))) == 1


def test_an_unusable_cache_warns_and_encoding_goes_on(model, tmp_path, reference):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.warns(EmbedtuneWarning, match="encoding cache .* is unusable"):
        vectors = Encoder(model, "fp32", cache=blocker).encode(TEXTS, show_progress=False)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


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
