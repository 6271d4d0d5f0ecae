"""Every index type's round trip, updates without rebuild, kills during writes, and the automatic choice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest
from helpers import CORPUS, write_beir

from embedtune.encoding import Encoder, EncodeSettings
from embedtune.errors import DataError, EmbedtuneError, EmbedtuneWarning
from embedtune.index import (
    INDEX_TYPES,
    BuildSettings,
    Index,
    add_documents,
    build_index,
    list_indexes,
    remove_documents,
)
from embedtune.index.knobs import calibrate, recall_at_k
from embedtune.index.types import choose_spec, create_index, hnsw_of, make_spec
from embedtune.ranking import row_scores
from embedtune.retrieval import Searcher, SearchSettings

WORDS = ["fast", "small", "secure", "graphical", "terminal", "network", "python", "audio"]
THINGS = ["editor", "server", "library", "game", "compiler", "shell"]
# 48 distinct documents: enough for IVF-PQ's 16-centroid codebooks.
BIG_CORPUS = {f"pkg-{a}-{t}": f"A {a} {t} for {b} work." for a in WORDS for t in THINGS for b in WORDS[:1]}


def write_corpus(path: Path, docs: dict[str, str], **extra) -> Path:
    path.write_text("".join(json.dumps({"_id": d, "text": t, **extra}) + "\n" for d, t in docs.items()))
    return path


@pytest.fixture
def big_corpus(tmp_path) -> Path:
    # Metadata as the Debian corpus has it: a BEIR "metadata" object beside the title.
    return write_corpus(tmp_path / "corpus.jsonl", BIG_CORPUS, title="t", metadata={"section": "utils"})


def build(model, corpus, idx, kind: str, name: str = "tiny", **kwargs) -> Path:
    build_index(
        corpus,
        name,
        model=model,
        build=BuildSettings(index_type=kind, **kwargs),
        encode=EncodeSettings(precision="fp32"),
        indexes_dir=idx,
        show_progress=False,
    )
    return Path(idx) / name


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_every_index_type_round_trips(tmp_path, tiny_st, big_corpus, kind):
    idx = tmp_path / "idx"
    build(tiny_st, big_corpus, idx, "flat", name="exact")
    lossy = kind in ("sq8", "ivf-sq8", "ivf-pq")  # quantised codes of the tiny model's near-identical vectors
    if lossy:
        with pytest.warns(EmbedtuneWarning, match="short of the target 0.99"):
            build(tiny_st, big_corpus, idx, kind)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", EmbedtuneWarning)  # the calibration reached its target
            build(tiny_st, big_corpus, idx, kind)
    index = Index.load("tiny", idx)
    m = index.manifest
    assert (m.index_type, m.count, m.vectors, m.dimension) == (kind, len(BIG_CORPUS), len(BIG_CORPUS), 32)
    assert index.doc_ids == list(BIG_CORPUS) and index.texts == [f"t {t}" for t in BIG_CORPUS.values()]
    assert (
        sorted(m.files) == ["docs.1.sqlite", "index.1.faiss", "lexical.1.npz"]
        and m.choice == f"chosen explicitly (type {kind})"
    )
    assert set(m.search_defaults) == (
        {"nprobe"} if kind.startswith("ivf") else {"ef_search"} if kind == "hnsw" else set()
    )
    # The .faiss file alone, read by plain FAISS, searches with the calibrated knob.
    plain = faiss.read_index(str(idx / "tiny" / "index.1.faiss"))
    if kind.startswith("ivf"):
        assert faiss.extract_index_ivf(plain).nprobe == m.search_defaults["nprobe"]
    elif kind == "hnsw":
        assert hnsw_of(plain).hnsw.efSearch == m.search_defaults["ef_search"]

    # The stored vectors answer like exact search (PQ approximately), loaded mapped or read.
    queries = list(BIG_CORPUS.values())[:12]
    exact = Searcher.open("exact", indexes_dir=idx).search(queries, k=len(BIG_CORPUS))
    exact_score = [{h.doc_id: h.score for h in hits} for hits in exact]
    for mmap in (True, False):
        found = Searcher(Index.load("tiny", idx, mmap=mmap)).search(queries, k=5)
        assert all(len(hits) == 5 for hits in found)
        recall = recall_at_k(
            np.array([[scores[h.doc_id] for h in hits] for hits, scores in zip(found, exact_score, strict=True)]),
            np.array([hits[4].score for hits in exact]),
        )
        # PQ keeps 4 bytes of the tiny model's near-identical vectors (cosines ~0.98): 4x better than chance.
        assert recall >= (0.4 if kind == "ivf-pq" else 0.9 if kind in ("sq8", "ivf-sq8") else 1.0), recall
        lookup = index.lookup([0])[0]
        assert (lookup.doc_id, lookup.metadata) == ("pkg-fast-editor", {"title": "t", "section": "utils"})  # flat


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf-pq"])
def test_add_and_remove_without_rebuild(tmp_path, tiny_st, big_corpus, kind, monkeypatch):
    idx = tmp_path / "idx"
    build(tiny_st, big_corpus, idx, kind)
    encoded: list[str] = []
    real_encode = Encoder.encode

    def counting_encode(self, texts, **kwargs):
        encoded.extend(texts)
        return real_encode(self, texts, **kwargs)

    monkeypatch.setattr(Encoder, "encode", counting_encode)
    update = {
        "pkg-fast-editor": "t " + BIG_CORPUS["pkg-fast-editor"],  # unchanged: must not be re-encoded
        "pkg-fast-server": "A brand new text for the fast server.",  # changed
        "new-doc": "A completely new document about databases.",  # new
    }
    result = add_documents("tiny", write_corpus(tmp_path / "add.jsonl", update), indexes_dir=idx, show_progress=False)
    assert (result.added, result.replaced, result.unchanged) == (1, 1, 1)
    assert encoded == [update["pkg-fast-server"], update["new-doc"]]

    index = Index.load("tiny", idx)
    assert len(index) == len(BIG_CORPUS) + 1 and index.manifest.generation == 2
    assert index.manifest.tombstones == (1 if kind == "hnsw" else 0)  # HNSW cannot drop the replaced vector
    hits = Searcher(index).search([update["pkg-fast-server"]], k=3)[0]
    assert hits[0].doc_id == "pkg-fast-server" and hits[0].text == update["pkg-fast-server"]

    result = remove_documents("tiny", ["pkg-fast-server", "new-doc", "never-there"], indexes_dir=idx)
    assert (result.removed, result.missing) == (2, ["never-there"])
    index = Index.load("tiny", idx)
    assert len(index) == len(BIG_CORPUS) - 1 and sorted(p.name for p in index.path.iterdir()) == [
        "docs.3.sqlite",
        "index.3.faiss",
        "lexical.3.npz",
        "manifest.json",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmbedtuneWarning)
        everything = Searcher(index).search([update["pkg-fast-server"]], k=1000)[0]
    ids = [h.doc_id for h in everything]
    assert "pkg-fast-server" not in ids and "new-doc" not in ids
    assert len(ids) == len(set(ids)) and (len(ids) == len(index) or kind == "hnsw")  # a graph may not reach all

    # Nothing to do writes nothing.
    assert not remove_documents("tiny", ["never-there"], indexes_dir=idx).changed
    assert Index.load("tiny", idx).manifest.generation == 3


KILLER = """
import os, signal, sys
import faiss
from embedtune.index import add_documents, build_index

real_writer = faiss.PyCallbackIOWriter  # the FAISS file is written through a Python file

def write_half_then_die(write):
    def half(data):
        write(data[: max(len(data) // 2, 1)])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_writer(half)

faiss.PyCallbackIOWriter = write_half_then_die
operation, model, corpus, indexes = sys.argv[1:]
if operation == "add":
    add_documents("tiny", corpus, indexes_dir=indexes, show_progress=False)
else:
    build_index(corpus, operation, model=model, build="hnsw", indexes_dir=indexes, overwrite=True, show_progress=False)
"""


def killed(operation: str, model: Path, corpus: Path, idx: Path) -> None:
    done = subprocess.run([sys.executable, "-c", KILLER, operation, str(model), str(corpus), str(idx)], check=False)
    assert done.returncode == -signal.SIGKILL


def test_kill_during_build_or_update_leaves_previous_index_usable(tmp_path, tiny_st, big_corpus, beir_dir):
    idx = tmp_path / "idx"
    build(tiny_st, big_corpus, idx, "ivf-flat")
    before = {p.name: p.read_bytes() for p in (idx / "tiny").iterdir()}
    queries = ["A secure shell for python work.", "audio game"]
    expected = Searcher.open("tiny", indexes_dir=idx).search(queries, k=5)

    killed("tiny", tiny_st, beir_dir, idx)  # rebuild over it, killed while writing the FAISS file
    files = {p.name: p.read_bytes() for p in (idx / "tiny").iterdir()}
    assert {n: files[n] for n in before} == before  # the live generation is untouched ...
    assert Searcher.open("tiny", indexes_dir=idx).search(queries, k=5) == expected  # ... and fully usable

    killed("add", tiny_st, write_corpus(tmp_path / "add.jsonl", {"x": "new text"}), idx)
    assert Searcher.open("tiny", indexes_dir=idx).search(queries, k=5) == expected

    # The next write succeeds and clears what the killed ones left behind.
    add_documents("tiny", write_corpus(tmp_path / "add.jsonl", {"x": "new text"}), indexes_dir=idx, show_progress=False)
    assert sorted(p.name for p in (idx / "tiny").iterdir()) == [
        "docs.2.sqlite",
        "index.2.faiss",
        "lexical.2.npz",
        "manifest.json",
    ]
    assert len(Index.load("tiny", idx, verify=True)) == len(BIG_CORPUS) + 1


def test_bad_corpora_and_searches(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"_id": "a", "text": "one"}\n{"_id": "b", "text": "two"}\n{"_id": "a", "text": "three"}\n')
    with pytest.raises(DataError, match=r"dup\.jsonl:3: field '_id': duplicate document id 'a'"):
        build(tiny_st, dup, idx, "flat")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"_id": "a", "text": "one"}\n{"_id": "b", "text": "  "}\n')
    with pytest.raises(DataError, match=r"empty\.jsonl:2: field 'text': empty"):
        build(tiny_st, empty, idx, "flat")
    assert list_indexes(idx) == []
    with pytest.raises(EmbedtuneError, match="ivf-pq needs at least 16 documents"):
        build(tiny_st, beir_dir, idx, "ivf-pq")
    with pytest.raises(EmbedtuneError, match="nlist=100 needs at least that many documents"):
        build(tiny_st, beir_dir, idx, "ivf-flat", nlist=100)
    with pytest.raises(EmbedtuneError, match="need an explicit index type"):
        build(tiny_st, beir_dir, idx, "auto", nlist=2)

    build(tiny_st, beir_dir, idx, "hnsw")
    with pytest.raises(DataError, match=r"dup\.jsonl:3: field '_id': duplicate document id 'a'"):
        add_documents("tiny", dup, indexes_dir=idx, show_progress=False)
    searcher = Searcher.open("tiny", indexes_dir=idx)
    with pytest.warns(EmbedtuneWarning, match=r"k=50 is larger than index 'tiny' \(8 documents\)"):
        assert len(searcher.search(["web"], k=50)[0]) == len(CORPUS)
    with pytest.warns(EmbedtuneWarning, match=r"query 2 is \d+ tokens long, over the model's limit of 128"):
        searcher.search(["web", "server " * 200], k=1)
    with pytest.raises(EmbedtuneError, match="nprobe does not apply to a hnsw index"):
        searcher.search(["web"], k=1, settings=SearchSettings(nprobe=4))
    assert searcher.search(["web"], k=3, settings=SearchSettings(ef_search=1))[0]  # FAISS raises ef to k itself


def test_add_with_another_model_is_refused(tmp_path, tiny_st, tiny_bert, beir_dir):
    idx = tmp_path / "idx"
    build(tiny_st, beir_dir, idx, "flat")
    with pytest.raises(EmbedtuneError, match="rebuild the index with this model"):
        add_documents("tiny", beir_dir, indexes_dir=idx, model=tiny_bert, show_progress=False)
    assert Index.load("tiny", idx).manifest.generation == 1


def test_automatic_choice_follows_size_and_memory():
    spec, why = choose_spec(60_594, 384, 8 * 10**9)
    assert spec.kind == "flat" and "exact" in why
    assert choose_spec(1_000_000, 384, 8 * 10**9)[0].kind == "ivf-flat"
    spec, why = choose_spec(1_000_000, 384, 10**9)  # 1.5 GB of float32 does not fit; 0.4 GB of int8 does
    assert spec.kind == "ivf-sq8" and spec.nlist == 4000 and "do not fit" in why
    assert choose_spec(10_000_000, 384, 10**9)[0].kind == "ivf-pq"
    assert make_spec("ivf-pq", 10_000, 384).pq_m == 96
    with pytest.raises(EmbedtuneError, match="must divide the dimension 384"):
        make_spec("ivf-pq", 10_000, 384, pq_m=100)
    with pytest.raises(EmbedtuneError, match="has no parameter nlist"):
        make_spec("hnsw", 10_000, 384, nlist=5)


def test_calibration_reaches_the_target_recall():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((4000, 16), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(len(vectors), dtype=np.int64) * 7  # FAISS ids need not be row numbers
    spec = make_spec("ivf-flat", len(vectors), 16)
    index = create_index(spec, 16)
    index.train(vectors)
    index.add_with_ids(vectors, ids)
    result = calibrate(index, spec, vectors, ids, target=0.95)
    assert result.reached and result.recall_at_10 >= 0.95 and 1 < result.knobs["nprobe"] < spec.nlist
    weaker = calibrate(index, spec, vectors, ids, target=0.5)
    assert weaker.knobs["nprobe"] < result.knobs["nprobe"]


def test_recall_counts_a_tied_duplicate_as_found():
    rng = np.random.default_rng(1)
    unique = rng.standard_normal((50, 8), dtype=np.float32)
    unique /= np.linalg.norm(unique, axis=1, keepdims=True)
    vectors = np.vstack([unique, unique])  # every document twice, as a corpus with copied descriptions
    queries = unique[:5] + 0.01
    scores = queries @ vectors.T
    exact = np.argsort(-scores, axis=1, kind="stable")[:, :3]  # a, its copy, then b (b's copy ties at 4th)
    kth = np.sort(scores, axis=1)[:, -3]
    copies = (exact + 50) % 100  # a's copy, a, b's copy: the same scores, but b's id is not there
    assert all(len(set(c) & set(e)) == 2 for c, e in zip(copies, exact, strict=True))
    assert recall_at_k(row_scores(queries, vectors, copies), kth) == 1.0
    missing = np.hstack([copies[:, :2], np.full((5, 1), -1)])  # no third result
    assert recall_at_k(row_scores(queries, vectors, missing), kth) == 2 / 3


def test_beir_folder_with_gzip_builds(tmp_path, tiny_st):
    import gzip

    root = write_beir(tmp_path / "beir")
    corpus = (root / "corpus.jsonl").read_bytes()
    (root / "corpus.jsonl").unlink()
    (root / "corpus.jsonl.gz").write_bytes(gzip.compress(corpus))
    path = build(tiny_st, root, tmp_path / "idx", "auto")
    index = Index.load(path)
    assert index.manifest.index_type == "flat" and "exact" in index.manifest.choice and len(index) == len(CORPUS)


def test_build_settings_refuse_bad_values_with_the_setting_named():
    from embedtune.settings import SettingError

    assert BuildSettings().index_type == "auto" and BuildSettings("hnsw", hnsw_m=16).spec_params["hnsw_m"] == 16
    for bad, message in (
        ({"index_type": "kd-tree"}, r"index_type: 'kd-tree' is not one of auto, flat"),
        ({"index_type": "hnsw", "hnsw_m": 1}, r"hnsw_m: must be at least 2, got 1"),
        ({"index_type": "ivf-flat", "nlist": 0}, r"nlist: must be at least 1, got 0"),
        ({"target_recall": 0.0}, r"target_recall: must be greater than 0, got 0"),
        ({"target_recall": 1.5}, r"target_recall: must be at most 1, got 1.5"),
        ({"memory_budget": -1.0}, r"memory_budget: must be greater than 0"),
        ({"train_size": 2.5}, r"train_size: expected a whole number"),
    ):
        with pytest.raises(SettingError, match=message):
            BuildSettings(**bad)
    with pytest.raises(EmbedtuneError, match=r"index parameter\(s\) nlist, pq_m need an explicit index type"):
        BuildSettings(nlist=4, pq_m=8)
    spec, why = BuildSettings(memory_budget=0.2).choose(200_000, 384)  # 0.2 GB: float vectors do not fit
    assert spec.kind == "ivf-sq8" and "memory budget 0.2 GB" in why
    spec, why = BuildSettings("ivf-flat", nlist=7).choose(1000, 32)
    assert (spec.kind, spec.nlist, why) == ("ivf-flat", 7, "chosen explicitly (type ivf-flat)")


def test_build_index_takes_a_type_name_and_returns_the_manifest(tmp_path, tiny_st, big_corpus):
    manifest = build_index(
        big_corpus, "named", model=tiny_st, build="ivf-flat", indexes_dir=tmp_path, show_progress=False
    )
    assert manifest.index_type == "ivf-flat" and manifest.count == len(BIG_CORPUS)
    assert manifest == Index.load("named", tmp_path).manifest and manifest.files  # the committed manifest
    with pytest.raises(EmbedtuneError, match="already exists"):
        build_index(big_corpus, "named", model=tiny_st, indexes_dir=tmp_path, show_progress=False)
