"""The probes a build calibrates its search knob on: query-like texts encoded as queries, recorded in the manifest."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import embedtune.index.build as build_module
from embedtune.encoding import Encoder, EncodeSettings
from embedtune.errors import EmbedtuneWarning
from embedtune.index import BuildSettings, Index, build_index
from embedtune.index.knobs import (
    CALIBRATION_QUERIES,
    MIN_JUDGED_PROBES,
    Probes,
    calibrate,
    document_probes,
    first_sentence,
    probe_texts,
)
from embedtune.index.merge import merge_shards
from embedtune.index.shards import encode_shard
from embedtune.index.store import DocStore
from embedtune.index.types import create_index, make_spec
from embedtune.models import load_model

FP32 = EncodeSettings(precision="fp32", cache=False)
TOOLS = ["editor", "server", "compiler", "shell", "game", "player", "viewer", "daemon"]
USES = ["text", "mail", "audio", "image", "network", "music", "video", "file"]
# 64 one-sentence documents: more than flat's nothing-to-calibrate, few enough to encode in a blink.
DOCS = {f"{u}-{t}": f"A small {u} {t} for everyday work." for u in USES for t in TOOLS}


def write_corpus(path: Path, docs: dict[str, str], titles: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ({"_id": d, "title": (titles or {}).get(d, ""), "text": t} for d, t in docs.items())
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_judged(root: Path, **splits: int) -> None:
    """A BEIR folder's queries and qrels: ``splits[name]`` judged queries for each split ``name``."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    for old in (root / "qrels").glob("*.tsv"):
        old.unlink()
    texts = {
        split: {f"{split}-{i}": f"{USES[i % 8]} {TOOLS[i // 8 % 8]} number {i}" for i in range(n)}
        for split, n in splits.items()
    }
    with (root / "queries.jsonl").open("w") as f:
        f.writelines(json.dumps({"_id": q, "text": t}) + "\n" for queries in texts.values() for q, t in queries.items())
    for split, queries in texts.items():
        rows = "".join(f"{q}\t{next(iter(DOCS))}\t1\n" for q in queries)
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)


def store_of(folder: Path, docs: list[tuple[str, str, dict]]) -> tuple[DocStore, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    store = DocStore(folder / "docs.sqlite", create=True)
    store.insert((fid, doc_id, text, meta) for fid, (doc_id, text, meta) in enumerate(docs))
    store.commit()
    return store, np.arange(len(docs), dtype=np.int64)


def test_first_sentence_is_query_length_and_skips_abbreviations():
    text = '0 A.D. (pronounced "zero ey-dee") is a free,\nopen-source game. In short, it is a war game.'
    assert first_sentence(text) == '0 A.D. (pronounced "zero ey-dee") is a free, open-source game.'
    assert first_sentence(" ".join(["word"] * 50) + ".") == " ".join(["word"] * 32)
    assert first_sentence("gzip compresses files") == "gzip compresses files"


def test_titles_are_preferred_and_a_shared_title_gives_way_to_the_first_sentence(tmp_path):
    docs = [
        ("vim", "Vim Vim is a text editor. It has modes.", {"title": "Vim"}),
        ("vim-tiny", "Vim A smaller build of the editor. Fewer features.", {"title": "Vim"}),  # a shared title
        ("gzip", "gzip compresses and decompresses files. It is fast.", {}),
    ]
    store, fids = store_of(tmp_path, docs)
    assert document_probes(store, fids) == (
        ["Vim", "A smaller build of the editor.", "gzip compresses and decompresses files."],
        "titles and first sentences",
    )
    assert document_probes(store, fids[:1]) == (["Vim"], "titles")
    assert document_probes(store, fids[2:]) == (["gzip compresses and decompresses files."], "first sentences")
    many, fids = store_of(tmp_path / "many", [(f"d{i}", f"Document number {i}.", {}) for i in range(600)])
    texts, kind = document_probes(many, fids)
    assert len(texts) == CALIBRATION_QUERIES and kind == "first sentences"  # a seeded sample of the documents


def test_judged_queries_are_preferred_dev_first_never_test(tmp_path):
    store, fids = store_of(tmp_path, [("gzip", "gzip compresses files.", {})])
    root = tmp_path / "beir"
    write_judged(root, test=80)
    assert probe_texts(store, fids, root) == (["gzip compresses files."], "first sentences")  # test never tunes
    write_judged(root, test=80, dev=MIN_JUDGED_PROBES - 1, train=60)  # too few dev queries to measure 0.99 on
    texts, kind = probe_texts(store, fids, root)
    assert kind == "train queries" and len(texts) == 60 and texts[0] == "text editor number 0"
    write_judged(root, test=80, dev=700, train=60)
    texts, kind = probe_texts(store, fids, root)
    assert kind == "dev queries" and len(texts) == CALIBRATION_QUERIES  # a seeded sample
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nnowhere\tgzip\t1\n")
    with pytest.warns(EmbedtuneWarning, match=r"dev\.tsv.*unknown query id.*calibrated on document texts instead"):
        assert probe_texts(store, fids, root)[1] == "first sentences"


def test_calibration_on_probes_measures_recall_for_them():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 16), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(len(vectors), dtype=np.int64) * 3
    spec = make_spec("hnsw", len(vectors), 16)
    index = create_index(spec, 16)
    index.add_with_ids(vectors, ids)
    queries = rng.standard_normal((200, 16), dtype=np.float32)  # far from every document, unlike corpus vectors
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    result = calibrate(index, spec, vectors, ids, target=0.99, probes=Probes(queries, "dev queries"))
    assert result.reached and result.recall_at_10 >= 0.99
    assert (result.queries, result.probes) == (200, "dev queries")
    assert calibrate(index, spec, vectors, ids, target=0.99).probes == "corpus vectors"


@pytest.fixture
def prompted(tmp_path, tiny_st) -> Path:
    """The tiny model with query and document prompts (the E5 style)."""
    path = tmp_path / "prompted"
    shutil.copytree(tiny_st, path)
    config = path / "config_sentence_transformers.json"
    config.write_text(
        json.dumps(json.loads(config.read_text()) | {"prompts": {"query": "query: ", "document": "passage: "}})
    )
    return path


def test_probes_are_encoded_with_the_query_prompt_and_recorded(tmp_path, prompted, monkeypatch):
    seen: list[Probes] = []
    real = build_module.calibrate
    monkeypatch.setattr(build_module, "calibrate", lambda *a, **k: seen.append(a[5]) or real(*a, **k))
    corpus = write_corpus(tmp_path / "corpus.jsonl", DOCS)
    manifest = build_index(
        corpus, "h", model=prompted, build="hnsw", encode=FP32, indexes_dir=tmp_path / "idx", show_progress=False
    )
    (probes,) = seen
    encoder = Encoder(load_model(prompted, device="cpu"), "fp32")
    as_queries = encoder.encode(list(DOCS.values()), show_progress=False, prompt_name="query")
    np.testing.assert_allclose(probes.vectors, as_queries, atol=1e-5)
    as_documents = encoder.encode(list(DOCS.values()), show_progress=False, prompt_name="document")
    assert not np.allclose(probes.vectors, as_documents, atol=1e-3)  # not the corpus vectors
    assert manifest.calibration["probes"] == "first sentences" and manifest.calibration["queries"] == len(DOCS)
    search = dict(manifest.describe(tmp_path / "idx" / "h"))["search"]
    assert search.startswith("hnsw, default ef_search=") and f"on {len(DOCS)} first sentences: " in search
    assert dict(replace(manifest, calibration={"recall_at_10": 1.0}).describe(tmp_path))["search"].endswith(
        "on a corpus sample: 1.0)"
    )  # an index built before the probes were recorded


def test_a_beir_folder_calibrates_on_its_dev_queries_and_flat_on_nothing(tmp_path, tiny_st, monkeypatch):
    root = tmp_path / "beir"
    write_corpus(root / "corpus.jsonl", DOCS)
    write_judged(root, dev=60, test=10)
    idx = tmp_path / "idx"
    manifest = build_index(
        root, "ivf", model=tiny_st, build="ivf-flat", encode=FP32, indexes_dir=idx, show_progress=False
    )
    assert (manifest.calibration["probes"], manifest.calibration["queries"]) == ("dev queries", 60)
    assert "on 60 dev queries: " in dict(manifest.describe(idx / "ivf"))["search"]
    monkeypatch.setattr(build_module, "query_probes", lambda *a: pytest.fail("flat search is exact: no probes"))
    flat = build_index(root, "flat", model=tiny_st, build="flat", encode=FP32, indexes_dir=idx, show_progress=False)
    assert dict(flat.describe(idx / "flat"))["search"] == "flat (exact search)" and flat.search_defaults == {}


def test_a_merge_calibrates_like_a_build_and_falls_back_to_corpus_vectors_without_the_model(tmp_path, tiny_st):
    model = tmp_path / "model"
    shutil.copytree(tiny_st, model)
    corpus = write_corpus(tmp_path / "corpus.jsonl", DOCS)
    idx = tmp_path / "idx"
    build = BuildSettings(index_type="hnsw")
    single = build_index(corpus, "single", model=model, build=build, encode=FP32, indexes_dir=idx, show_progress=False)
    for name in ("merged", "elsewhere"):
        for shard in range(2):
            encode_shard(corpus, name, shards=2, shard=shard, model=model, encode=FP32, indexes_dir=idx,
                         show_progress=False)  # fmt: skip
    merged = merge_shards("merged", indexes_dir=idx, build=build, show_progress=False)
    assert merged.calibration == single.calibration and merged.search_defaults == single.search_defaults
    shutil.rmtree(model)  # the merge runs where the shards' model is not
    with pytest.warns(EmbedtuneWarning, match=r"is not at .*model.*calibrated on corpus vectors.*index calibrate"):
        elsewhere = merge_shards("elsewhere", indexes_dir=idx, build=build, show_progress=False)
    assert (elsewhere.calibration["probes"], elsewhere.calibration["queries"]) == ("corpus vectors", len(DOCS))
    assert f"on {len(DOCS)} corpus vectors: " in dict(Index.load("elsewhere", idx).manifest.describe(idx))["search"]
