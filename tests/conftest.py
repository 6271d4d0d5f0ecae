"""Shared fixtures: a tiny seeded BERT (real encoder path, bundled vocab) and a handmade BEIR split."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TOKENIZER_FILES, write_beir

from embedtune.models import default_model_path

# The test models are tiny: one thread is faster than two (no OpenMP hand-offs) and, on a busy
# 2-core machine, ten times faster than threads spinning against each other.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def encoding_cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own empty encoding cache, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("encoding-cache")
    monkeypatch.setenv("EMBEDTUNE_CACHE", str(path))
    return path


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "beir")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A plain Hugging Face BERT checkpoint: 2 layers of width 32, seeded, with the bundled vocab."""
    import torch
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    for name in TOKENIZER_FILES:
        shutil.copy(default_model_path() / name, path / name)
    vocab_size = sum(1 for _ in (path / "vocab.txt").open(encoding="utf-8"))
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_st(tiny_bert: Path, tmp_path_factory) -> Path:
    """The tiny BERT saved as a sentence-transformers model (mean pooling + normalise)."""
    from embedtune.models import load_model

    path = tmp_path_factory.mktemp("tiny-st")
    load_model(tiny_bert, device="cpu").save(str(path))
    return path


@pytest.fixture(scope="session")
def _tiny_st_loaded(tiny_st: Path):
    from embedtune.models import load_model

    return load_model(tiny_st, device="cpu")


@pytest.fixture
def tiny_model(_tiny_st_loaded):
    """The tiny sentence-transformers model, loaded once per session and handed to each test as a copy."""
    return copy.deepcopy(_tiny_st_loaded)


@pytest.fixture(scope="session")
def tiny_cross_encoder(tiny_bert: Path, tmp_path_factory) -> Path:
    """A sentence-transformers CrossEncoder directory: the tiny BERT with a seeded one-logit head."""
    import torch
    from sentence_transformers import CrossEncoder

    path = tmp_path_factory.mktemp("tiny-cross")
    torch.manual_seed(0)
    CrossEncoder(str(tiny_bert), num_labels=1, device="cpu", local_files_only=True).save(str(path))
    return path
