"""Index round trip, search quality on an easy query, model binding and atomic writes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import CORPUS

from embedtune.encoding import Encoder, EncodeSettings, resolve_precision
from embedtune.errors import EmbedtuneError
from embedtune.index import Index, Manifest, build_index
from embedtune.models import load_model, model_fingerprint
from embedtune.retrieval import Searcher


def test_round_trip_keeps_vectors_ids_texts_and_manifest(tmp_path, tiny_st, beir_dir):
    manifest = build_index(
        beir_dir,
        "tiny",
        model=tiny_st,
        indexes_dir=tmp_path,
        encode=EncodeSettings(precision="fp32"),
        show_progress=False,
    )
    path = tmp_path / "tiny"
    index = Index.load("tiny", tmp_path)
    assert isinstance(manifest, Manifest) and manifest == index.manifest  # build_index returns what it committed
    assert index.doc_ids == list(CORPUS) and index.texts == list(CORPUS.values())
    m = index.manifest
    assert (m.count, m.dimension, m.normalized, m.precision) == (len(CORPUS), 32, True, "fp32")
    assert m.model_fingerprint == model_fingerprint(tiny_st)

    expected = Encoder(load_model(tiny_st, device="cpu"), "fp32").encode(list(CORPUS.values()), show_progress=False)
    stored = np.vstack([index.faiss_index.reconstruct(i) for i in range(len(CORPUS))])  # FAISS id i = document i
    np.testing.assert_allclose(stored, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    assert Index.load(path).name == "tiny"  # by path as well as by name


def test_easy_query_finds_the_right_document_with_the_real_model(tmp_path, beir_dir):
    build_index(beir_dir, "minilm", model="default", indexes_dir=tmp_path, show_progress=False)
    searcher = Searcher.open("minilm", indexes_dir=tmp_path)
    hits = searcher.search(["web server", "secure shell login", "compress files"], k=3)
    assert [h[0].doc_id for h in hits] == ["nginx", "openssh", "gzip"]
    assert all(h[0].score > h[1].score for h in hits)
    assert len(searcher.search(["anything"], k=100)[0]) == len(CORPUS)  # k capped at the index size


def test_bf16_encoding_agrees_with_fp32(tiny_st):
    model = load_model(tiny_st, device="cpu")
    texts = list(CORPUS.values())
    fp32 = Encoder(model, "fp32").encode(texts, show_progress=False)
    bf16 = Encoder(model, "bf16").encode(texts, show_progress=False)
    assert np.min(np.sum(fp32 * bf16, axis=1)) > 0.99
    # bf16 ran on a copy: the caller's weights are still fp32.
    assert next(model.parameters()).dtype.is_floating_point and str(next(model.parameters()).dtype) == "torch.float32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(EmbedtuneError, match="unknown precision"):
        resolve_precision("fp8", "cpu")


def test_search_with_another_model_is_refused(tmp_path, tiny_st, tiny_bert, beir_dir):
    build_index(beir_dir, "tiny", model=tiny_st, indexes_dir=tmp_path, show_progress=False)
    with pytest.raises(EmbedtuneError, match=r"built by the model at .* rebuild the index"):
        Searcher.open("tiny", indexes_dir=tmp_path, model=tiny_bert)
    # A byte-identical copy elsewhere is the same model and is accepted.
    copy = shutil.copytree(tiny_st, tmp_path / "copy")
    assert Searcher.open("tiny", indexes_dir=tmp_path, model=copy).search(["web"], k=1)


def test_model_changed_after_build_is_refused(tmp_path, tiny_st, beir_dir):
    model_dir = shutil.copytree(tiny_st, tmp_path / "model")
    build_index(beir_dir, "tiny", model=model_dir, indexes_dir=tmp_path, show_progress=False)
    config = json.loads((model_dir / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmbedtuneError, match="fingerprint"):
        Searcher.open("tiny", indexes_dir=tmp_path)


def test_missing_and_damaged_indexes(tmp_path, tiny_st, beir_dir):
    with pytest.raises(EmbedtuneError, match=r"no index 'nope'.*has no indexes"):
        Index.load("nope", tmp_path)
    build_index(beir_dir, "tiny", model=tiny_st, indexes_dir=tmp_path, show_progress=False)
    path = tmp_path / "tiny"
    with pytest.raises(EmbedtuneError, match="available: tiny"):
        Index.load("nope", tmp_path)
    faiss_file, store_file = path / "index.1.faiss", path / "docs.1.sqlite"
    good = faiss_file.read_bytes()

    faiss_file.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(EmbedtuneError, match=r"index\.1\.faiss: does not match the manifest \(is \d+ bytes"):
        Index.load("tiny", tmp_path)
    faiss_file.write_bytes(b"x" * len(good))  # same size, garbage
    with pytest.raises(EmbedtuneError, match=r"index\.1\.faiss: does not match the manifest \(checksum differs"):
        Index.load("tiny", tmp_path)
    mid = len(good) // 2
    faiss_file.write_bytes(good[:mid] + bytes([good[mid] ^ 1]) + good[mid + 1 :])  # one bit of one vector
    with pytest.raises(EmbedtuneError, match="checksum differs"):  # every load checks, not only verify
        Index.load("tiny", tmp_path)
    with pytest.raises(EmbedtuneError, match="SHA-256 differs"):
        Index.load("tiny", tmp_path, verify=True)
    faiss_file.write_bytes(good)
    store_file.write_bytes(b"y" * store_file.stat().st_size)
    with pytest.raises(EmbedtuneError, match=r"docs\.1\.sqlite: does not match the manifest \(checksum differs"):
        Index.load("tiny", tmp_path)
    store_file.unlink()
    with pytest.raises(EmbedtuneError, match=r"incomplete \(no docs\.1\.sqlite\)"):
        Index.load("tiny", tmp_path)

    build_index(beir_dir, "tiny", model=tiny_st, indexes_dir=tmp_path, show_progress=False, overwrite=True)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(manifest | {"count": 99}))
    with pytest.raises(EmbedtuneError, match=r"index files disagree \(manifest: 99 documents"):
        Index.load("tiny", tmp_path)
    (path / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "format"}))
    with pytest.raises(EmbedtuneError, match=r"index format 1 .* rebuild it, overwriting the old one"):
        Index.load("tiny", tmp_path)
    (path / "manifest.json").write_text("{")
    with pytest.raises(EmbedtuneError, match="unreadable index manifest"):
        Index.load("tiny", tmp_path)


def test_failed_rebuild_leaves_previous_index_intact(tmp_path, tiny_st, beir_dir, monkeypatch):
    import faiss

    idx = tmp_path / "indexes"
    build_index(beir_dir, "tiny", model=tiny_st, indexes_dir=idx, show_progress=False)
    before = {p.name: p.read_bytes() for p in (idx / "tiny").iterdir()}

    def crash(*_args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        build_index(beir_dir, "tiny", model=tiny_st, indexes_dir=idx, show_progress=False, overwrite=True)
    after = {p.name: p.read_bytes() for p in (idx / "tiny").iterdir()}
    assert after == before  # the new generation's files are gone again, and the writer's lock
    assert sorted(p.name for p in idx.iterdir()) == ["tiny"]  # no temporary directory left
    with pytest.raises(RuntimeError, match="disk full"):
        build_index(beir_dir, "fresh", model=tiny_st, indexes_dir=idx, show_progress=False)
    assert sorted(p.name for p in idx.iterdir()) == ["tiny"]


def test_the_searchers_retriever_answers_in_rows_of_a_given_corpus_order(tmp_path, tiny_st, beir_dir):
    build_index(beir_dir, "tiny", model=tiny_st, indexes_dir=tmp_path, show_progress=False)
    searcher = Searcher.open("tiny", indexes_dir=tmp_path)
    queries = ["web server", "compress files"]
    hits = searcher.search(queries, k=3)
    missing = next(iter(CORPUS))
    corpus = [d for d in reversed(CORPUS) if d != missing]  # another order, and one indexed document absent
    row_map = searcher.index.row_map(corpus)
    assert row_map.shape == (len(CORPUS),) and (row_map == -1).sum() == 1
    scores, rows = searcher.retriever(queries, doc_ids=corpus, show_progress=False).search(np.arange(2), 3)
    assert scores.shape == rows.shape == (2, 3)
    for q_hits, q_scores, q_rows in zip(hits, scores, rows, strict=True):
        assert [corpus[r] if r >= 0 else missing for r in q_rows] == [h.doc_id for h in q_hits]
        np.testing.assert_allclose(q_scores, [h.score for h in q_hits], rtol=1e-6)


def test_an_index_and_its_model_moved_together_still_search(tmp_path, tiny_st, beir_dir):
    project = tmp_path / "project"
    shutil.copytree(tiny_st, project / "models" / "m")
    build_index(beir_dir, "tiny", model=project / "models" / "m", indexes_dir=project / "indexes", show_progress=False)
    expected = Searcher.open("tiny", indexes_dir=project / "indexes").search(["web server"], k=3)
    assert Index.load("tiny", project / "indexes").manifest.model_relative == "../../models/m"
    moved = tmp_path / "elsewhere"
    project.rename(moved)  # the recorded absolute model path is gone; the relative one still holds
    assert Searcher.open("tiny", indexes_dir=moved / "indexes").search(["web server"], k=3) == expected
    shutil.rmtree(moved / "models")
    with pytest.raises(EmbedtuneError):  # neither place: refused, never searched with another model
        Searcher.open("tiny", indexes_dir=moved / "indexes")
