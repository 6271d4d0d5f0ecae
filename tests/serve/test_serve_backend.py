"""The query encoder the service picks: OpenVINO when installed (checked against PyTorch), else PyTorch."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from embedtune.errors import EmbedtuneWarning
from embedtune.index import Index
from embedtune.serve import registry
from embedtune.serve.registry import load_searcher


def test_auto_uses_openvino_when_installed_with_the_same_vectors(indexes_dir, caplog):
    pytest.importorskip("openvino")
    with caplog.at_level(logging.INFO, logger="embedtune.serve"):
        fast = load_searcher(Index.load("tiny", indexes_dir), "auto")
    assert fast.encoder.backend == "openvino" and "encoding queries with openvino" in caplog.text
    torch = load_searcher(Index.load("tiny", indexes_dir), "torch")
    texts = ["web server", "a text editor for programmers"]
    cosine = np.sum(fast.encode_queries(texts) * torch.encode_queries(texts), axis=1)
    assert cosine.min() >= 0.999
    assert [h.doc_id for h in fast.search(texts, 3)[0]] == [h.doc_id for h in torch.search(texts, 3)[0]]


def test_auto_falls_back_to_torch_saying_why(indexes_dir, caplog, monkeypatch):
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name: None)
    with caplog.at_level(logging.INFO, logger="embedtune.serve"):
        searcher = load_searcher(Index.load("tiny", indexes_dir), "auto")
    assert searcher.encoder.backend == "torch" and "openvino is not installed" in caplog.text
    monkeypatch.undo()
    pytest.importorskip("openvino")
    from embedtune.encoding import openvino as ov_backend

    monkeypatch.setattr(ov_backend, "MIN_COSINE", 1.5)  # every conversion now fails its check
    with pytest.warns(EmbedtuneWarning, match=r"openvino unusable \(the openvino conversion .* disagrees"):
        searcher = load_searcher(Index.load("tiny", indexes_dir), "auto")
    assert searcher.encoder.backend == "torch"
