"""Fixtures of the encoding tests: the test texts, the tiny model, its fp32 reference vectors, and a
record of the texts an Encoder actually runs through its model."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CORPUS, QUERIES

from embedtune.encoding import Encoder
from embedtune.models import load_model


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return [*CORPUS.values(), *QUERIES.values()]


@pytest.fixture(scope="module")
def model(tiny_st):
    return load_model(tiny_st, device="cpu")


@pytest.fixture(scope="module")
def reference(model, texts) -> np.ndarray:
    """sentence-transformers' own fp32 encode(), the vectors every precision is held to."""
    return model.encode(texts, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)


@pytest.fixture
def seen(monkeypatch) -> list[str]:
    """Every text an Encoder actually runs through its model, in this test."""
    ran: list[str] = []
    run = Encoder._run

    def counting(self, texts, *args):
        ran.extend(texts)
        return run(self, texts, *args)

    monkeypatch.setattr(Encoder, "_run", counting)
    return ran
