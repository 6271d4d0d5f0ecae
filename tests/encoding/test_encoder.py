"""The encoder: each precision against fp32, length-sorted batches, repeated texts, prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedtune.encoding import Encoder
from embedtune.errors import EmbedtuneError
from embedtune.models import load_model


@pytest.mark.parametrize(("precision", "bound"), [("fp32", 0.99999), ("bf16", 0.999), ("int8", 0.99)])
def test_each_precision_agrees_with_fp32(model, texts, reference, precision, bound):
    encoder = Encoder(model, precision)
    vectors = encoder.encode(texts, batch_size=4, show_progress=False)
    assert encoder.precision == precision and vectors.dtype == np.float32 and vectors.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # normalised in fp32
    assert np.min(np.sum(vectors * reference, axis=1)) > bound
    # Converted copies only: the caller's model (perhaps being trained) keeps its fp32 weights.
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_half_precision_pads_batches_to_a_multiple_of_8_tokens_without_changing_vectors(
    model, texts, tiny_bert, monkeypatch
):
    assert Encoder(model, "fp32").length_step == 1
    assert Encoder(load_model(tiny_bert, device="cpu", max_seq_length=30), "bf16").length_step == 1  # 30: not 8k
    encoder = Encoder(model, "bf16")
    widths: list[int] = []
    forward = type(encoder.model).forward
    monkeypatch.setattr(
        type(encoder.model), "forward", lambda m, f, **kw: widths.append(f["input_ids"].shape[1]) or forward(m, f, **kw)
    )
    padded = encoder.encode(texts, batch_size=4, show_progress=False)
    assert encoder.length_step == 8 and widths and all(w % 8 == 0 for w in widths)
    encoder.length_step = 1
    unpadded = encoder.encode(texts, batch_size=4, show_progress=False)
    assert any(w % 8 for w in widths[len(widths) // 2 :])  # the tiny texts are not all 8k tokens long
    assert np.min(np.sum(padded * unpadded, axis=1)) > 0.9999


def test_batches_hold_texts_of_similar_token_counts_and_results_keep_input_order(model, texts, reference, monkeypatch):
    encoder = Encoder(model, "fp32")
    batches: list[list[str]] = []
    preprocess = encoder.model.preprocess

    def recording(batch, **kwargs):
        batches.append(list(batch))
        return preprocess(batch, **kwargs)

    monkeypatch.setattr(encoder.model, "preprocess", recording)
    vectors = encoder.encode(texts, batch_size=3, show_progress=False)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    lengths = [[len(model.tokenizer(t)["input_ids"]) for t in batch] for batch in batches]
    assert [n for batch in lengths for n in batch] == sorted((n for b in lengths for n in b), reverse=True)
    assert sorted(t for b in batches for t in b) == sorted(texts)


def test_repeated_texts_are_encoded_once(model, seen):
    encoder = Encoder(model, "fp32")
    vectors = encoder.encode(["web server", "text editor", "web server"], show_progress=False)
    assert seen == ["web server", "text editor"] and np.array_equal(vectors[0], vectors[2])
    assert (encoder.stats.texts, encoder.stats.encoded) == (3, 2)


def test_tokenising_ahead_gives_the_same_vectors(model, texts, reference):
    encoder = Encoder(model, "fp32")
    encoder.overlap = True  # what a GPU does; here on the CPU for the test
    np.testing.assert_allclose(encoder.encode(texts, batch_size=4, show_progress=False), reference, atol=1e-5)


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


def test_backend_names_are_checked_and_openvino_missing_says_how_to_install(model, monkeypatch):
    from embedtune.encoding import EncodeSettings
    from embedtune.encoding.openvino import require_openvino

    with pytest.raises(EmbedtuneError, match="backend"):
        EncodeSettings(backend="onnx")
    with pytest.raises(EmbedtuneError, match="unknown backend 'onnx'"):
        Encoder(model, "fp32", backend="onnx")
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # as if not installed
    with pytest.raises(EmbedtuneError, match=r"pip install 'embedtune\[openvino\]'"):
        require_openvino()
