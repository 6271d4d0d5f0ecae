"""Sharded encoding and merge: equal to a one-process build, and refusing shards that do not belong together."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import CORPUS, QUERIES

from embedtune.encoding import EncodeSettings
from embedtune.errors import DataError, EmbedtuneError
from embedtune.index import BuildSettings, Index, build_index
from embedtune.index.merge import merge_shards
from embedtune.index.shards import ShardSettings, encode_shard, line_range, shards_dir_of
from embedtune.settings import SettingError

FP32 = EncodeSettings(precision="fp32", cache=False)
# Enough documents for an IVF index with a few cells; varied words so the vectors spread.
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda", "zeta"]
MANY = {f"d{i}": f"{WORDS[i % 10]} {WORDS[(i // 10) % 10]} {WORDS[(i * 7) % 10]} tool number {i}" for i in range(240)}


def write_corpus(path: Path, docs: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    return path


def encode_all(corpus, name, idx, model, shards: int, encode=FP32, only=None) -> None:
    for shard in only if only is not None else range(shards):
        encode_shard(
            corpus, name, shards=shards, shard=shard, model=model, encode=encode, indexes_dir=idx, show_progress=False
        )


def vectors_of(index: Index) -> np.ndarray:
    return np.vstack([index.faiss_index.reconstruct(i) for i in range(len(index))])


def assert_same_index(merged: Index, single: Index) -> None:
    assert merged.doc_ids == single.doc_ids and merged.texts == single.texts
    assert [d.doc_id for d in merged.lookup(range(len(single))).values()] == single.doc_ids  # same FAISS ids
    for field in ("count", "dimension", "precision", "model_fingerprint", "corpus_sha256", "index_type", "pooling"):
        assert getattr(merged.manifest, field) == getattr(single.manifest, field), field


def test_line_ranges_tile_the_file():
    for lines in (0, 1, 7, 8, 100):
        for shards in (1, 2, 3, 7):
            ranges = [line_range(lines, shards, k) for k in range(shards)]
            assert ranges[0][0] == 1 and ranges[-1][1] == lines + 2
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_three_shards_merge_into_the_one_process_index(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    build_index(beir_dir, "single", model=tiny_st, encode=FP32, indexes_dir=idx, show_progress=False)
    encode_all(beir_dir, "merged", idx, tiny_st, 3)
    counts = [json.loads(p.read_text())["count"] for p in sorted(shards_dir_of(idx, "merged").glob("*/shard.json"))]
    assert counts == [3, 3, 2]
    manifest = merge_shards("merged", indexes_dir=idx, show_progress=False)
    merged, single = Index.load("merged", idx), Index.load("single", idx)
    assert manifest == merged.manifest and merged.manifest.count == len(CORPUS)
    assert_same_index(merged, single)
    np.testing.assert_allclose(vectors_of(merged), vectors_of(single), atol=1e-6)
    assert [p.name for p in idx.iterdir() if p.name.startswith(".")] == []  # no temporaries left
    # the BM25 side is built from the merged store, as a one-process build builds it
    drop_time = lambda lexical: {k: v for k, v in lexical.items() if k != "seconds"}  # noqa: E731
    assert drop_time(merged.manifest.lexical) == drop_time(single.manifest.lexical) != {}
    queries = list(QUERIES.values())
    for a, b in zip(merged.lexical.search(queries, 3), single.lexical.search(queries, 3), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bf16_shards_match_an_fp32_build_within_bf16_tolerance(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    build_index(beir_dir, "single", model=tiny_st, encode=FP32, indexes_dir=idx, show_progress=False)
    encode_all(beir_dir, "merged", idx, tiny_st, 3, encode=EncodeSettings(precision="bf16", cache=False))
    merge_shards("merged", indexes_dir=idx, show_progress=False)
    merged, single = Index.load("merged", idx), Index.load("single", idx)
    assert merged.doc_ids == single.doc_ids and merged.manifest.precision == "bf16"
    np.testing.assert_allclose(vectors_of(merged), vectors_of(single), atol=2e-2)


def test_ivf_merge_trains_once_and_equals_the_one_process_index(tmp_path, tiny_st):
    corpus = write_corpus(tmp_path / "corpus.jsonl", MANY)
    idx = tmp_path / "idx"
    build = BuildSettings(index_type="ivf-flat", nlist=4)
    build_index(corpus, "single", model=tiny_st, build=build, encode=FP32, indexes_dir=idx, show_progress=False)
    encode_all(corpus, "merged", idx, tiny_st, 3)
    merge_shards("merged", indexes_dir=idx, build=build, show_progress=False)
    merged, single = Index.load("merged", idx), Index.load("single", idx)
    assert_same_index(merged, single)
    assert merged.manifest.search_defaults == single.manifest.search_defaults
    assert merged.manifest.train_size == single.manifest.train_size
    probe = np.random.default_rng(0).standard_normal((20, 32)).astype(np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    a, b = merged.search_vectors(probe, 5), single.search_vectors(probe, 5)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)


def test_a_missing_or_duplicated_shard_is_refused(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    encode_all(beir_dir, "x", idx, tiny_st, 3, only=[0, 2])
    with pytest.raises(EmbedtuneError, match=r"missing shard\(s\) 1 of 3; encode them with shards=3, shard=K"):
        merge_shards("x", indexes_dir=idx, show_progress=False)
    folder = shards_dir_of(idx, "x")
    shutil.copytree(folder / "shard-00000-of-00003", folder / "copy-of-0")
    with pytest.raises(EmbedtuneError, match="shard 0 of 3 appears twice"):
        merge_shards("x", indexes_dir=idx, show_progress=False)
    assert not (idx / "x").exists()


def test_shards_of_another_model_precision_split_or_changed_files_are_refused(tmp_path, tiny_st, tiny_bert, beir_dir):
    idx = tmp_path / "idx"
    encode_all(beir_dir, "x", idx, tiny_st, 2, only=[0])
    encode_all(beir_dir, "x", idx, tiny_bert, 2, only=[1])
    with pytest.raises(EmbedtuneError, match=r"was encoded with model fingerprint .* same model, precision and corpus"):
        merge_shards("x", indexes_dir=idx, show_progress=False)
    encode_shard(beir_dir, "x", shards=2, shard=1, model=tiny_st, encode=EncodeSettings(precision="bf16"),
                 indexes_dir=idx, overwrite=True, show_progress=False)  # fmt: skip
    with pytest.raises(EmbedtuneError, match="precision bf16, not fp32"):
        merge_shards("x", indexes_dir=idx, show_progress=False)
    shutil.rmtree(shards_dir_of(idx, "x") / "shard-00001-of-00002")
    encode_all(beir_dir, "x", idx, tiny_st, 2, only=[1])
    encode_all(beir_dir, "x", idx, tiny_st, 3, only=[2])
    with pytest.raises(EmbedtuneError, match="a split into 3 shards"):
        merge_shards("x", indexes_dir=idx, show_progress=False)
    shutil.rmtree(shards_dir_of(idx, "x") / "shard-00002-of-00003")
    vectors = shards_dir_of(idx, "x") / "shard-00001-of-00002" / "vectors.npy"
    with pytest.raises(EmbedtuneError, match="already exists"):
        encode_all(beir_dir, "x", idx, tiny_st, 2, only=[1])
    with vectors.open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x7f")
    with pytest.raises(EmbedtuneError, match=r"vectors\.npy: missing or changed since the shard was written"):
        merge_shards("x", indexes_dir=idx, show_progress=False)


def test_a_document_id_in_two_shards_is_refused(tmp_path, tiny_st):
    corpus = write_corpus(tmp_path / "c.jsonl", {"a": "one", "b": "two"})
    corpus.write_text(corpus.read_text() + json.dumps({"_id": "a", "text": "three"}) + "\n")
    idx = tmp_path / "idx"
    encode_all(corpus, "x", idx, tiny_st, 2)
    with pytest.raises(DataError, match=r"c.jsonl: field '_id': duplicate document id 'a' \(in shard 1 of 2"):
        merge_shards("x", indexes_dir=idx, show_progress=False)


def test_shard_settings_validate_themselves():
    with pytest.raises(SettingError, match="shard: must be below shards \\(3\\), got 3"):
        ShardSettings(shards=3, shard=3)
    with pytest.raises(SettingError, match="shard: needs shards"):
        ShardSettings(shard=0)
    with pytest.raises(SettingError, match="shards: must be at least 1"):
        ShardSettings(shards=0)
    with pytest.raises(SettingError, match="give one"):
        ShardSettings(shards=2, shard=0, ray="")


def test_ray_build_equals_the_one_process_index(tmp_path, tiny_st, beir_dir):
    ray = pytest.importorskip("ray")
    from embedtune.index.ray_shards import build_with_ray

    idx = tmp_path / "idx"
    build_index(beir_dir, "single", model=tiny_st, encode=FP32, indexes_dir=idx, show_progress=False)
    repo = str(Path(__file__).resolve().parents[2])  # the workers import this checkout's embedtune
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": repo}})
    try:
        manifest = build_with_ray(
            beir_dir, "ray", shards=3, model=tiny_st, encode=FP32, indexes_dir=idx, show_progress=False
        )
        bad = write_corpus(tmp_path / "bad.jsonl", {"a": "one", "b": "two", "c": "three"})
        bad.write_text(bad.read_text().replace('"_id": "c", ', ""))
        with pytest.raises(EmbedtuneError, match=r"bad\.jsonl:3: field '_id': missing"):  # an actor's, as is
            build_with_ray(bad, "bad", shards=2, model=tiny_st, encode=FP32, indexes_dir=idx, show_progress=False)
    finally:
        ray.shutdown()
    merged, single = Index.load("ray", idx), Index.load("single", idx)
    assert manifest.count == len(CORPUS)
    assert_same_index(merged, single)
    np.testing.assert_allclose(vectors_of(merged), vectors_of(single), atol=1e-6)
    assert sorted(p.name for p in idx.iterdir()) == ["ray", "single"]  # the shards were temporary


def test_shards_follow_the_corpus_size_and_merge_across_backends(tmp_path, tiny_st, beir_dir, monkeypatch):
    """auto picks for the whole corpus's size, as a one-process build does; shards that other backends
    encoded (machines with and without OpenVINO) merge, and the manifest says so."""
    pytest.importorskip("openvino")
    import embedtune.encoding.encoder as encoder_module

    idx = tmp_path / "idx"
    monkeypatch.setattr(encoder_module, "OPENVINO_MIN_TEXTS", len(CORPUS))  # this corpus pays a conversion
    single = build_index(beir_dir, "single", model=tiny_st, encode=FP32, indexes_dir=idx, show_progress=False)
    encode_all(beir_dir, "auto", idx, tiny_st, 2)
    assert single.backend == "openvino" and merge_shards("auto", indexes_dir=idx, show_progress=False).backend == (
        "openvino"
    )
    torch_side = EncodeSettings(precision="fp32", cache=False, backend="torch")
    encode_all(beir_dir, "mixed", idx, tiny_st, 2, only=[0])
    encode_all(beir_dir, "mixed", idx, tiny_st, 2, encode=torch_side, only=[1])
    mixed = merge_shards("mixed", indexes_dir=idx, show_progress=False)
    assert (
        mixed.backend == "openvino+torch" and "fp32 (openvino+torch)" in dict(mixed.describe(idx / "mixed"))["encoding"]
    )
    np.testing.assert_allclose(vectors_of(Index.load("mixed", idx)), vectors_of(Index.load("single", idx)), atol=2e-3)
