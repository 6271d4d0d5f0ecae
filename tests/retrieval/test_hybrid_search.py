"""Hybrid search of built indexes: the BM25 side on disk, the three modes, add/remove, reranking, calibration."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import CORPUS, QRELS, write_beir

from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.index import Index, add_documents, build_index, remove_documents
from embedtune.index.lexical import LexicalSettings
from embedtune.retrieval import BM25, Reranker, Searcher, SearchSettings
from embedtune.retrieval.calibration import calibrate_index
from embedtune.settings import SettingError

MODES = ("dense", "bm25", "hybrid")


def _build(beir_dir, tmp_path, tiny_st, **kwargs) -> Index:
    build_index(beir_dir, "t", model=tiny_st, indexes_dir=tmp_path, show_progress=False, **kwargs)
    return Index.load("t", tmp_path)


def _ids(searcher: Searcher, query: str, mode: str, k: int = 8) -> list[str]:
    return [h.doc_id for h in searcher.search([query], k, settings=SearchSettings(mode=mode))[0]]


def test_bm25_side_is_a_generation_file_and_scores_like_bm25_in_memory(tmp_path, tiny_st, beir_dir):
    index = _build(beir_dir, tmp_path, tiny_st)
    assert "lexical.1.npz" in index.manifest.files and index.manifest.lexical["k1"] == 1.2
    scores, fids = index.lexical.search(["secure shell server", "the"], 3)
    expected = BM25(CORPUS).search(["secure shell server", "the"], 3)
    assert [index.doc_ids[f] for f in fids[0][:2]] == [d for d, _ in expected[0][:2]]  # the third is a tie
    np.testing.assert_allclose(scores[0], [s for _, s in expected[0]], rtol=1e-5)
    assert (fids[1] == -1).all() and expected[1] == []  # stop words only: nothing, not arbitrary documents
    assert Index.load("t", tmp_path, verify=True).has_bm25  # recorded and checked like the other files


def test_every_mode_answers_and_hybrid_fuses_both_lists(tmp_path, tiny_st, beir_dir):
    _build(beir_dir, tmp_path, tiny_st)
    searcher = Searcher.open("t", indexes_dir=tmp_path)
    assert searcher.mode == "dense"  # not calibrated: dense, as before
    assert _ids(searcher, "secure shell", "bm25", 2) == ["openssh-doc", "openssh"]
    hybrid = _ids(searcher, "secure shell", "hybrid", 8)
    assert set(hybrid[:2]) <= set(
        _ids(searcher, "secure shell", "bm25", 3) + _ids(searcher, "secure shell", "dense", 3)
    )
    assert sorted(hybrid) == sorted(CORPUS)
    plain = searcher.search(["web server"], 3, settings=SearchSettings(mode="dense"))
    assert plain == searcher.search(["web server"], 3)  # the uncalibrated default is dense


def test_add_and_remove_keep_the_bm25_side_consistent_in_every_mode(tmp_path, tiny_st, beir_dir):
    _build(beir_dir, tmp_path, tiny_st)
    new = tmp_path / "new.jsonl"
    new.write_text('{"_id": "zstd", "text": "zstandard zstd compressor for fast realtime compression"}\n')
    add_documents("t", new, indexes_dir=tmp_path, show_progress=False)
    remove_documents("t", ["nginx"], indexes_dir=tmp_path)
    index = Index.load("t", tmp_path)
    assert sorted(index.manifest.files) == ["docs.3.sqlite", "index.3.faiss", "lexical.3.npz"]
    searcher = Searcher(index)
    for mode in MODES:
        found = _ids(searcher, "zstandard zstd compressor web server", mode, 20)
        assert "zstd" in found and "nginx" not in found, mode
    assert _ids(searcher, "zstandard", "bm25") == ["zstd"]
    assert _ids(searcher, "nginx reverse proxy", "bm25") == []


def test_hnsw_tombstones_are_not_found_by_bm25_either(tmp_path, tiny_st, beir_dir):
    from embedtune.index import BuildSettings

    _build(beir_dir, tmp_path, tiny_st, build=BuildSettings(index_type="hnsw"))
    remove_documents("t", ["gzip"], indexes_dir=tmp_path)
    searcher = Searcher.open("t", indexes_dir=tmp_path)
    for mode in MODES:
        assert "gzip" not in _ids(searcher, "gzip compresses files", mode), mode


def test_bad_modes_and_indexes_without_bm25_are_one_line_errors(tmp_path, tiny_st, beir_dir):
    index = _build(beir_dir, tmp_path, tiny_st, lexical=LexicalSettings(bm25=False))
    assert not index.has_bm25 and sorted(index.manifest.files) == ["docs.1.sqlite", "index.1.faiss"]
    with pytest.raises(SettingError, match="mode: 'fuzzy' is not one of dense, bm25, hybrid"):
        SearchSettings(mode="fuzzy")
    with pytest.raises(EmbedtuneError, match=r"no BM25 side, so it cannot search in hybrid mode: it was built without"):
        Searcher(index, settings=SearchSettings(mode="hybrid"))
    searcher = Searcher(index)
    with pytest.raises(EmbedtuneError, match="cannot search in bm25 mode"):
        searcher.search(["web"], 3, settings=SearchSettings(mode="bm25"))
    assert len(searcher.search(["web"], 3)[0]) == 3  # dense still works


def test_rerank_rescores_the_candidates_with_the_cross_encoder(tmp_path, tiny_st, tiny_cross_encoder, beir_dir):
    _build(beir_dir, tmp_path, tiny_st)
    settings = SearchSettings(mode="hybrid", rerank=tiny_cross_encoder, rerank_depth=6)
    searcher = Searcher.open("t", indexes_dir=tmp_path, settings=settings)
    hits = searcher.search(["secure shell", "web server"], 3)
    candidates = searcher.search(["secure shell"], 6, settings=SearchSettings(mode="hybrid"))[0]
    reranker = Reranker(tiny_cross_encoder)
    expected = reranker.score(["secure shell"] * 6, [h.text for h in candidates])
    order = np.argsort(-expected, kind="stable")[:3]
    assert [h.doc_id for h in hits[0]] == [candidates[i].doc_id for i in order]
    np.testing.assert_allclose([h.score for h in hits[0]], expected[order], rtol=1e-4)
    with pytest.raises(EmbedtuneError, match=r"rerank_depth \(6\) must be at least k \(7\)"):
        searcher.search(["web"], 7)
    with pytest.raises(EmbedtuneError, match=r"not a cross-encoder .*SentenceTransformer"):
        Reranker(tiny_st)
    with pytest.raises(EmbedtuneError, match="no such cross-encoder directory"):
        Reranker(tmp_path / "nowhere")


def test_calibration_on_dev_queries_picks_a_mode_at_least_as_good_as_both(tmp_path, tiny_st):
    qrels = dict(QRELS, dev=QRELS["train"] + QRELS["dev"])
    beir = write_beir(tmp_path / "beir", qrels=qrels)
    _build(beir, tmp_path, tiny_st)
    with pytest.raises(EmbedtuneError, match="split 'test' must not tune"):
        calibrate_index("t", beir, "test", indexes_dir=tmp_path, show_progress=False)
    manifest = calibrate_index("t", beir, "dev", indexes_dir=tmp_path, show_progress=False)
    c = manifest.query_calibration
    ndcg = c["ndcg_at_10"]
    assert c["queries"] == 6 and c["recall_at_10"]["tuned"] == 1.0  # flat: exact
    assert ndcg["hybrid"] >= max(ndcg["dense"], ndcg["bm25"]) - 1e-4
    assert manifest.default_mode in MODES and c["fusion"]["method"] in ("minmax", "zscore", "rrf")
    assert manifest.default_mode == (
        "hybrid" if ndcg["hybrid"] > max(ndcg["dense"], ndcg["bm25"]) else manifest.default_mode
    )
    index = Index.load("t", tmp_path)
    rows = dict(index.manifest.describe(index.path))
    assert "recall@10 vs exact on real queries of dev" in rows["queries"] and "nDCG@10 on dev" in rows["modes"]
    assert Searcher(index).mode == manifest.default_mode


def test_calibration_tunes_hnsw_on_real_queries_and_reports_held_out_recall(tmp_path, tiny_st):
    from embedtune.index import BuildSettings

    corpus = {f"d{i}": f"document {i} about topic {i % 7} and word{i % 13}" for i in range(120)}
    queries = {f"q{i}": f"topic {i % 7} word{i % 13}" for i in range(60)}
    qrels = {"dev": [(f"q{i}", f"d{i}") for i in range(60)], "test": [("q0", "d0")]}
    beir = write_beir(tmp_path / "beir", corpus=corpus, queries=queries, qrels=qrels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmbedtuneWarning)
        _build(beir, tmp_path, tiny_st, build=BuildSettings(index_type="hnsw", hnsw_m=4, ef_construction=8))
    manifest = calibrate_index("t", beir, "dev", indexes_dir=tmp_path, show_progress=False)
    recall = manifest.query_calibration["recall_at_10"]
    assert (recall["tuned_on"], recall["held_out"]) == (30, 30) and 0 < recall["held_out_recall"] <= 1
    assert set(manifest.search_defaults) == {"ef_search"}
