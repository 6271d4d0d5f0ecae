"""Augmentation: pairs from the corpus (title -> text, sentence -> rest) and seeded query noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import train_config

from embedtune.settings import SettingError
from embedtune.training import train
from embedtune.training.augment import augment, corpus_pairs, noise_queries
from embedtune.training.wordnet import find_wordnet, synonyms
from embedtune.training_data import load_training_data

LONG = (
    "The package installs a web server. It listens on port eighty by default and serves static files. "
    "Configuration lives in a single file under the etc folder. Modules add compression and caching."
)
ONE_SENTENCE = "a single long sentence about a text editor for programmers that keeps going on and on for many words"
DOCS = {
    "titled": ("Vim editor", "Vim is a text editor for programmers."),
    "long": ("", LONG),
    "one": ("", ONE_SENTENCE),
    "short": ("", "too short to split."),
    "pos": ("Gzip", "gzip compresses files."),
}


def _beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    corpus = [{"_id": d, "title": t, "text": x} for d, (t, x) in DOCS.items()]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    queries = [{"_id": f"q{i}", "text": text} for i, text in enumerate(["compression utility", "held out query"])]
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tpos\t1\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ttitled\t1\n")
    return root


def test_corpus_pairs_title_to_text_and_sentence_to_rest(tmp_path):
    built = corpus_pairs(_beir(tmp_path / "beir"), 10, seed=0, avoid={"pos"})
    pairs = dict(zip(built.anchors, built.positives, strict=True))
    assert pairs["Vim editor"] == "Vim is a text editor for programmers." and pairs["Gzip"] == "gzip compresses files."
    assert (built.titled, built.split, built.skipped, built.fresh) == (2, 2, 1, 4)
    assert built.anchors[-1] == "Gzip"  # a training positive comes last
    for anchor, positive in pairs.items():
        if anchor in ("Vim editor", "Gzip"):
            continue
        source = LONG if anchor in LONG else ONE_SENTENCE
        assert anchor not in positive and len(anchor.split()) >= 3  # the sentence is removed from its passage
        assert sorted((anchor + " " + positive).split()) == sorted(source.split())


def test_corpus_pairs_are_seeded_and_counted(tmp_path):
    root = _beir(tmp_path / "beir")
    a, b = corpus_pairs(root, 3, seed=1), corpus_pairs(root, 3, seed=1)
    assert a == b and len(a.anchors) == 3
    others = [corpus_pairs(root, 4, seed=s).anchors for s in range(6)]
    assert len({tuple(o) for o in others}) > 1


def test_augment_mixes_pairs_and_records_the_choice(tmp_path):
    root = _beir(tmp_path / "beir")
    config = train_config(tmp_path / "m", "default", root, corpus_pairs=3.0)
    data, choices = augment(config, load_training_data(root))
    assert len(data.dataset) == 1 + 3 and data.dataset.column_names == ["anchor", "positive"]
    assert choices["corpus_pairs"].value == 3 and "3 of 3 asked" in choices["corpus_pairs"].why
    assert "held out query" not in data.dataset["anchor"]  # test queries are never read


@pytest.mark.parametrize(
    ("name", "text", "setting", "error"),
    [
        ("pairs.jsonl", '{"query": "a b", "positive": "c d"}\n', "corpus_pairs", "needs a BEIR folder"),
        ("sts.tsv", "sentence1\tsentence2\tscore\na cat\ta dog\t0.5\n", "query_noise", "applies to queries"),
    ],
)
def test_data_of_another_shape_is_refused(tmp_path, name, text, setting, error):
    path = tmp_path / name
    path.write_text(text)
    config = train_config(tmp_path / "m", "default", path, **{setting: 0.5})
    with pytest.raises(SettingError, match=f"{setting}: {error}"):
        augment(config, load_training_data(path))


def test_noise_honours_the_rate_and_the_seed():
    queries = [f"word{i} other{i} third{i}" for i in range(2000)]
    noisy, counts = noise_queries(queries, 0.3, seed=5, table={"other7": ["alternative"]})
    changed = sum(a != b for a, b in zip(queries, noisy, strict=True))
    assert 0.26 < changed / len(queries) < 0.34
    assert changed == counts["deletion"] + counts["swap"] + counts["synonym"]  # distinct words: every edit shows
    assert noise_queries(queries, 0.3, seed=5, table={"other7": ["alternative"]})[0] == noisy
    assert noise_queries(queries, 0.3, seed=6)[0] != noisy
    assert noise_queries(queries, 0.0, seed=5)[0] == queries
    every, counts = noise_queries(["one", "two words"], 1.0, seed=0, table={"one": ["single"]})
    assert every[0] == "single" and every[1] != "two words" and counts["unchanged"] == 0
    assert noise_queries(["alone"], 1.0, seed=0)[1]["unchanged"] == 1


def test_noise_changes_only_queries(tmp_path, beir_dir):
    config = train_config(tmp_path / "m", "default", beir_dir, query_noise=1.0)
    data = load_training_data(beir_dir)
    noisy, choices = augment(config, data)
    assert noisy.dataset["positive"] == data.dataset["positive"]
    assert noisy.dataset["anchor"] != data.dataset["anchor"] and noisy.dataset.column_names == ["anchor", "positive"]
    assert choices["query_noise"].value == 5 and "5 of 5 queries" in choices["query_noise"].why


@pytest.mark.skipif(find_wordnet() is None, reason="no WordNet database (apt-get install wordnet-base)")
def test_wordnet_synonyms_offline():
    found = synonyms(find_wordnet(), ["install", "quickly", "the", "zzzzqx"])
    assert "set up" in found["install"] and "rapidly" in found["quickly"]
    assert "the" not in found and "zzzzqx" not in found


def test_settings_are_checked(tmp_path):
    with pytest.raises(SettingError, match="query_noise: must be at most 1"):
        train_config(tmp_path / "m", "default", tmp_path, query_noise=1.5)
    with pytest.raises(SettingError, match="corpus_pairs: must be at least 0"):
        train_config(tmp_path / "m", "default", tmp_path, corpus_pairs=-1.0)


def test_trains_with_corpus_pairs_and_noise(tmp_path, tiny_st):
    root = _beir(tmp_path / "beir")
    config = train_config(
        tmp_path / "model", tiny_st, root, corpus_pairs=2.0, query_noise=0.5, max_steps=3, batch_size=2, dev=False
    )
    result = train(config)
    assert result.steps == 3 and result.rows == 1 + 2
    record = json.loads((result.output / "embedtune_train.json").read_text())
    assert record["choices"]["corpus_pairs"]["value"] == 2 and "query_noise" in record["choices"]
    assert record["config"]["corpus_pairs"] == 2.0
