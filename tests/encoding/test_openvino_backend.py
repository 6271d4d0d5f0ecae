"""The OpenVINO backend: vectors against PyTorch's, the converted model cached on disk, its own cache key."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run

import embedtune.encoding.openvino as ov_backend
from embedtune.encoding import Encoder
from embedtune.errors import EmbedtuneError, EmbedtuneWarning

pytest.importorskip("openvino")


@pytest.fixture
def conversions(monkeypatch) -> list[int]:
    """One entry per conversion the backend runs in this test."""
    calls: list[int] = []
    convert = ov_backend._convert

    def counting(*args):
        calls.append(1)
        return convert(*args)

    monkeypatch.setattr(ov_backend, "_convert", counting)
    return calls


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))  # both normalised


def test_vectors_match_pytorch_in_batches_and_one_at_a_time(model, texts, reference):
    encoder = Encoder(model, "fp32", backend="openvino")
    assert encoder.backend == "openvino" and encoder.precision == "fp32"
    batched = encoder.encode(texts, batch_size=4, show_progress=False)
    assert batched.dtype == np.float32 and batched.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert _min_cosine(batched, reference) >= 0.999
    single = np.stack([encoder.encode([t], batch_size=1, show_progress=False)[0] for t in texts[:6]])
    assert _min_cosine(single, reference[:6]) >= 0.999


def test_the_converted_model_is_cached_and_read_back(model, texts, tmp_path, conversions):
    first = Encoder(model, "fp32", cache=tmp_path, backend="openvino")
    assert len(conversions) == 1 and first._forward.converted
    assert list((tmp_path / "openvino").glob("*/model.xml")) == [first._forward.path / "model.xml"]
    assert not [p for p in (tmp_path / "openvino").iterdir() if p.name.startswith(".")]  # no temporaries left
    second = Encoder(model, "fp32", cache=tmp_path, backend="openvino")  # as in a new process
    assert len(conversions) == 1 and not second._forward.converted
    np.testing.assert_allclose(
        second.encode(texts[:4], show_progress=False), first.encode(texts[:4], show_progress=False), atol=1e-6
    )


def test_a_broken_cached_model_is_converted_again(model, texts, tmp_path, conversions):
    path = Encoder(model, "fp32", cache=tmp_path, backend="openvino")._forward.path
    (path / "model.xml").write_text("not a model")
    with pytest.warns(EmbedtuneWarning, match="unreadable converted model"):
        encoder = Encoder(model, "fp32", cache=tmp_path, backend="openvino")
    assert len(conversions) == 2 and encoder.encode(texts[:2], show_progress=False).shape[0] == 2
    assert Encoder(model, "fp32", cache=tmp_path, backend="openvino") and len(conversions) == 2  # replaced


def test_vectors_are_cached_apart_from_pytorch_ones(model, texts, tmp_path, seen):
    torch_encoder = Encoder(model, "fp32", cache=tmp_path)
    torch_encoder.encode(texts, show_progress=False)
    seen.clear()
    ov_encoder = Encoder(model, "fp32", cache=tmp_path, backend="openvino")
    ov_encoder.encode(texts, show_progress=False)
    assert seen == list(dict.fromkeys(texts)), "openvino vectors must not be served from torch's"
    (torch_space, torch_description), (ov_space, ov_description) = torch_encoder._space(""), ov_encoder._space("")
    assert torch_space != ov_space and ov_description["backend"] == "openvino"
    assert "backend" not in torch_description  # vectors cached before there were backends keep their key
    seen.clear()
    Encoder(model, "fp32", cache=tmp_path, backend="openvino").encode(texts, show_progress=False)
    assert seen == []


def test_a_conversion_that_disagrees_with_pytorch_is_refused_and_not_cached(model, tmp_path, monkeypatch):
    monkeypatch.setattr(ov_backend, "MIN_COSINE", 1.5)
    with pytest.raises(EmbedtuneError, match=r"disagrees with PyTorch .*use backend torch"):
        Encoder(model, "fp32", cache=tmp_path, backend="openvino")
    assert not list(tmp_path.glob("openvino/*/model.xml"))


def test_precisions_it_does_not_run_fall_back_to_auto_with_a_warning(model, monkeypatch):
    from embedtune.encoding import precision as precision_policy

    monkeypatch.setattr(precision_policy, "cpu_has_bf16", lambda: False)  # auto means fp32 ...
    monkeypatch.setattr(ov_backend, "cpu_has_bf16", lambda: False)  # ... and the backend agrees
    with pytest.warns(EmbedtuneWarning, match="int8 is not offered with the openvino backend; encoding in fp32"):
        assert Encoder(model, "int8", backend="openvino").precision == "fp32"
    with pytest.warns(EmbedtuneWarning, match="bf16 runs only on CPUs with bf16 arithmetic"):
        assert Encoder(model, "bf16", backend="openvino").precision == "fp32"


def test_auto_means_bf16_where_the_cpu_has_bf16_arithmetic_without_a_warning(monkeypatch):
    """As for torch: AMX or AVX512-BF16 (OpenVINO's bf16 hint beats f32 on both)."""
    import warnings

    from embedtune.encoding import precision as precision_policy

    for bf16, expected in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(precision_policy, "cpu_has_bf16", lambda bf16=bf16: bf16)
        monkeypatch.setattr(ov_backend, "cpu_has_bf16", lambda bf16=bf16: bf16)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert ov_backend.openvino_precision("auto") == expected


def test_an_unwritable_folder_warns_and_encoding_goes_on(model, texts, tmp_path, reference):
    blocker = tmp_path / "cache"
    blocker.mkdir()
    (blocker / "openvino").write_text("")  # a file where the folder would go
    with pytest.warns(EmbedtuneWarning, match="cannot be cached"):
        encoder = Encoder(model, "fp32", cache=blocker, backend="openvino")
    assert _min_cosine(encoder.encode(texts, show_progress=False), reference) >= 0.999


def test_encode_command_takes_the_backend(tmp_path, tiny_st, model):
    source = tmp_path / "texts.txt"
    source.write_text("web server\ntext editor\n")
    out = tmp_path / "vectors.npy"
    run("encode", source, "-o", out, "-m", tiny_st, "--precision", "fp32", "--no-cache", "--backend", "openvino")
    expected = Encoder(model, "fp32").encode(["web server", "text editor"], show_progress=False)
    assert _min_cosine(np.load(out), expected) >= 0.999


def test_auto_converts_only_where_the_conversion_pays(model, texts, tmp_path, conversions, monkeypatch):
    """A batch workload below OPENVINO_MIN_TEXTS stays on torch until the model has been converted once;
    an open-ended one (a search, the service) and a large one convert."""
    import embedtune.encoding.encoder as encoder_module
    from embedtune.encoding import make_encoder

    monkeypatch.setattr(encoder_module, "OPENVINO_MIN_TEXTS", 10)
    small = make_encoder(model, "fp32", workload=9, cache=tmp_path)
    assert small.backend == "torch" and conversions == []
    large = make_encoder(model, "fp32", workload=10, cache=tmp_path)
    assert large.backend == "openvino" and len(conversions) == 1
    assert _min_cosine(large.encode(texts, show_progress=False), small.encode(texts, show_progress=False)) >= 0.999
    # converted now (cached): even a small workload uses it, with no second conversion
    assert make_encoder(model, "fp32", workload=1, cache=tmp_path).backend == "openvino" and len(conversions) == 1
    assert make_encoder(model, "fp32", workload=1, cache=tmp_path / "other").backend == "torch"
    assert make_encoder(model, "fp32", workload=None, cache=tmp_path / "other").backend == "openvino"
    assert make_encoder(model, "fp32", backend="torch", workload=None).backend == "torch"


def test_auto_falls_back_to_torch_when_openvino_is_missing_or_its_conversion_fails(model, tmp_path, monkeypatch):
    import importlib.util

    from embedtune.encoding import make_encoder

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert make_encoder(model, "fp32", workload=None, cache=tmp_path).backend == "torch"
    monkeypatch.undo()
    monkeypatch.setattr(ov_backend, "MIN_COSINE", 1.5)  # every conversion now fails its check
    with pytest.warns(EmbedtuneWarning, match=r"openvino unusable \(the openvino conversion .* disagrees"):
        assert make_encoder(model, "fp32", workload=None, cache=tmp_path).backend == "torch"
    with pytest.raises(EmbedtuneError, match="disagrees with PyTorch"):  # asked for by name: no fallback
        make_encoder(model, "fp32", backend="openvino", cache=tmp_path)


def test_auto_keeps_torch_for_a_precision_openvino_would_change(model, monkeypatch):
    from embedtune.encoding import make_encoder

    assert make_encoder(model, "int8", workload=None).backend == "torch"  # int8 stays int8, on torch
    monkeypatch.setattr(ov_backend, "cpu_has_bf16", lambda: False)
    assert make_encoder(model, "bf16", workload=None).backend == "torch"
