"""Shared fixtures: a tiny seeded BERT (real encoder path, bundled vocab) and a handmade BEIR split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from embedtune.models import default_model_path

# The test models are tiny: one thread is faster than two (no OpenMP hand-offs) and, on a busy
# 2-core machine, ten times faster than threads spinning against each other.
torch.set_num_threads(1)

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# A small corpus where each query has an obvious answer, plus one query with two relevant documents.
CORPUS = {
    "nginx": "nginx is a small, powerful and scalable web server and reverse proxy.",
    "vim": "Vim is an almost compatible version of the UNIX editor Vi, a text editor for programmers.",
    "gzip": "gzip compresses and decompresses files using Lempel-Ziv coding (LZ77).",
    "tetris": "A falling blocks puzzle game in the terminal, a clone of Tetris.",
    "openssh": "OpenSSH is a secure shell client for remote login to another machine over the network.",
    "openssh-doc": "Documentation for OpenSSH, the secure shell client and server.",
    "python3": "Python is an interactive high-level object-oriented programming language.",
    "postgres": "PostgreSQL is a fully featured object-relational SQL database server.",
}
QUERIES = {
    "q-web": "web server",
    "q-edit": "text editor",
    "q-zip": "compression utility",
    "q-game": "puzzle game",
    "q-ssh": "secure shell",
    "q-py": "programming language",
    "q-db": "SQL database",
}
QRELS = {
    "train": [("q-web", "nginx"), ("q-edit", "vim"), ("q-zip", "gzip"), ("q-game", "tetris"), ("q-py", "python3")],
    "dev": [("q-db", "postgres")],
    "test": [("q-ssh", "openssh"), ("q-ssh", "openssh-doc"), ("q-db", "postgres")],
}


def write_beir(root: Path, corpus=CORPUS, queries=QUERIES, qrels=QRELS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with (root / "corpus.jsonl").open("w") as f:
        for doc_id, text in corpus.items():
            f.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t1" for q, d in rows)]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


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
