"""The dev evaluation scores as ``embedtune eval`` does: same encoder, same ranking, same pytrec_eval metrics."""

from __future__ import annotations

import json

import pytest
from helpers import write_beir

from embedtune.data import RetrievalSplit, load_split
from embedtune.encoding import EncodeSettings
from embedtune.evaluate import EvalSettings, evaluate_model
from embedtune.settings import SettingError
from embedtune.training import TrainConfig
from embedtune.training.dev import build_dev_evaluator, exact_run, trainer_evaluator
from embedtune.training_data import load_training_data

DEV_QRELS = [
    ("q-web", "nginx"),
    ("q-edit", "vim"),
    ("q-zip", "gzip"),
    ("q-game", "tetris"),
    ("q-ssh", "openssh"),
    ("q-ssh", "openssh-doc"),
    ("q-py", "python3"),
    ("q-db", "postgres"),
]


def _evaluator(root, **settings):
    config = TrainConfig(output="unused", data=root, **settings)
    return build_dev_evaluator(config.dev_settings(), load_training_data(root, split="dev"), "fp32")


@pytest.mark.parametrize(("dev_queries", "dev_corpus"), [(500, 5000), (4, 6)], ids=["whole-split", "sample"])
def test_dev_metrics_equal_embedtune_eval_on_the_same_sample(tmp_path, tiny_st, tiny_model, dev_queries, dev_corpus):
    root = write_beir(tmp_path / "beir", qrels={"dev": DEV_QRELS})
    evaluator = _evaluator(root, dev_queries=dev_queries, dev_corpus=dev_corpus, metric="mrr@5", seed=3)
    baseline = evaluator(tiny_model)  # the first model seen picks the dev corpus and scores from those vectors
    dev = evaluator(tiny_model)  # encoded again: the same numbers
    assert dev == pytest.approx(baseline, abs=1e-6)
    sample = evaluator.split
    if dev_queries < 7:  # sampled: the queries asked for, every relevant document, hard candidates up to dev_corpus
        assert len(sample.queries) == 4 and len(sample.corpus) == 6
        assert all(d in sample.corpus for docs in sample.qrels.values() for d in docs)
        split = RetrievalSplit(sample.corpus, sample.queries, sample.qrels, name="beir/dev")
    else:
        split = load_split(root, "dev")
        assert (sample.queries, sample.corpus, sample.qrels) == (split.queries, split.corpus, split.qrels)

    # The trainer's keys are eval's metric names (hit_rate@k, not sentence-transformers' accuracy@k).
    ks = {"hit_rate": (1, 5, 10), "map": (5, 100)}
    expected = {
        f"dev_cosine_{family}@{k}"
        for family in ("hit_rate", "precision", "recall", "mrr", "ndcg", "map")
        for k in ks.get(family, (5, 10))
    }
    assert set(dev) == expected and evaluator.primary_metric == "dev_cosine_mrr@5"

    names = {key: key.removeprefix("dev_cosine_") for key in dev}
    settings = EvalSettings(metrics=tuple(names.values()), ks=(1,), show_progress=False)
    encoding = EncodeSettings(batch_size=64, precision="fp32", cache=False)
    result = evaluate_model(tiny_st, split, settings, encoding)
    for key, name in names.items():
        assert dev[key] == pytest.approx(result.metrics[name], abs=1e-6), key
    assert 0 < dev["dev_cosine_ndcg@10"] < 1  # the tiny model ranks neither perfectly nor hopelessly


def test_dev_evaluation_encodes_without_dropout_and_gives_the_model_back_in_its_mode(tmp_path, tiny_model):
    root = write_beir(tmp_path / "beir", qrels={"dev": DEV_QRELS})
    evaluator = _evaluator(root)
    tiny_model.eval()
    in_eval_mode = evaluator(tiny_model)
    tiny_model.train()
    assert evaluator(tiny_model) == in_eval_mode and tiny_model.training
    assert evaluator.texts == 7 + 8


def test_the_trainer_gets_a_sentence_transformers_evaluator(tmp_path, tiny_model):
    from sentence_transformers.base.evaluation import BaseEvaluator

    evaluator = _evaluator(write_beir(tmp_path / "beir", qrels={"dev": DEV_QRELS}))
    wrapped = trainer_evaluator(evaluator)
    assert isinstance(wrapped, BaseEvaluator) and wrapped.greater_is_better and wrapped.texts == evaluator.texts
    assert wrapped.primary_metric == "dev_cosine_ndcg@10"
    assert wrapped(tiny_model, None, epoch=1, steps=2) == evaluator(tiny_model)


def test_a_tie_at_the_cut_is_cut_as_eval_cuts_it():
    """The dev run is eval's run: ``depth`` documents, ranked by the one exact top-k, a tie cut by row."""
    import numpy as np

    from embedtune.retrieval import DenseRetriever

    queries = np.array([[1.0, 0.0]], dtype=np.float32)
    documents = np.array([[0.5, 0.0], [0.9, 0.0], [0.5, 0.0], [0.1, 0.0]], dtype=np.float32)
    run = exact_run(["q"], queries, ["a", "b", "c", "d"], documents, depth=2)
    assert run == {"q": {"b": pytest.approx(0.9), "a": 0.5}} and list(run["q"]) == ["b", "a"]
    scores, rows = DenseRetriever(documents, queries, precision="fp32").search(np.array([0]), 2)
    assert {"abcd"[r]: float(s) for s, r in zip(scores[0], rows[0], strict=True)} == run["q"]
    assert exact_run(["q"], queries, ["a", "b", "c", "d"], documents, depth=1) == {"q": {"b": pytest.approx(0.9)}}
    assert list(exact_run(["q"], queries, ["a", "b", "c", "d"], documents, depth=9)["q"]) == ["b", "a", "c", "d"]


def test_a_pairs_dev_file_is_the_split_eval_reads_from_it(tmp_path):
    from embedtune.splits import load_retrieval

    rows = [
        {"query": "web server", "positive": "nginx serves web pages", "negative": "vim edits text"},
        {"query": "text editor", "positive": "vim edits text", "negative": "apache serves web pages"},
        {"query": "web server", "positive": "apache serves web pages", "negative": "gzip compresses files"},
    ]
    dev_path = _scored_pairs(tmp_path / "dev.jsonl", rows)
    train_path = _scored_pairs(tmp_path / "train.jsonl", [{"query": "a", "positive": "b"}])
    config = TrainConfig(output="unused", data=train_path, dev_data=dev_path, metric="hit_rate@1")
    evaluator = build_dev_evaluator(config.dev_settings(), load_training_data(train_path), "fp32")
    assert evaluator.primary_metric == "dev_cosine_hit_rate@1"
    read = load_retrieval(dev_path, "dev")
    got = evaluator.candidates
    assert (got.corpus, got.queries, got.qrels) == (read.corpus, read.queries, read.qrels)
    assert len(got.queries) == 2 and len(got.corpus) == 4 and read.name == "dev/dev"


def _scored_pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SCORED = [
    {"sentence1": "web server", "sentence2": "nginx serves web pages", "score": 4.5},
    {"sentence1": "text editor", "sentence2": "vim edits text", "score": 4.0},
    {"sentence1": "puzzle game", "sentence2": "a database server", "score": 0.5},
    {"sentence1": "secure shell", "sentence2": "remote login over ssh", "score": 3.5},
    {"sentence1": "compression", "sentence2": "a falling blocks game", "score": 1.0},
]


def test_scored_pairs_get_the_correlations_sentence_transformers_reported(tmp_path, tiny_model):
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    train_path = _scored_pairs(tmp_path / "train.jsonl", SCORED)
    dev_path = _scored_pairs(tmp_path / "dev.jsonl", SCORED[::-1])
    config = TrainConfig(output="unused", data=train_path, dev_data=dev_path, score_range=(0, 5))
    evaluator = build_dev_evaluator(config.dev_settings(), load_training_data(train_path, score_range=(0, 5)), "fp32")
    assert evaluator.primary_metric == "dev_spearman_cosine" and evaluator.texts == 10
    ours = evaluator(tiny_model)
    rows = load_training_data(dev_path, score_range=(0, 5)).dataset
    theirs = EmbeddingSimilarityEvaluator(rows["sentence1"], rows["sentence2"], rows["label"], name="dev")(tiny_model)
    assert set(ours) == {"dev_pearson_cosine", "dev_spearman_cosine"}
    assert ours == pytest.approx({k: theirs[k] for k in ours}, abs=1e-5)

    wrong = TrainConfig(output="unused", data=train_path, dev_data=dev_path, score_range=(0, 5), metric="ndcg@10")
    with pytest.raises(SettingError, match="metric: 'ndcg@10' does not apply to scored pairs; use spearman or pearson"):
        build_dev_evaluator(wrong.dev_settings(), load_training_data(train_path, score_range=(0, 5)), "fp32")


def test_no_dev_set_without_dev_data_or_a_dev_split(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "a", "positive": "b"}) + "\n")
    config = TrainConfig(output="unused", data=pairs)
    assert build_dev_evaluator(config.dev_settings(), load_training_data(pairs), "fp32") is None
    root = write_beir(tmp_path / "beir", qrels={"train": DEV_QRELS})
    config = TrainConfig(output="unused", data=root)
    assert build_dev_evaluator(config.dev_settings(), load_training_data(root), "fp32") is None


def test_the_dev_corpus_is_the_positives_and_the_hard_candidates_not_random_documents(tmp_path, tiny_model):
    """Among 300 documents that share no word with any query, BM25's matches are the ones kept."""
    from helpers import CORPUS

    filler = {f"filler-{i}": f"zzz{i} qqq{i} unrelated filler paragraph number {i}" for i in range(300)}
    qrels = DEV_QRELS[:3]  # web server -> nginx, text editor -> vim, compression utility -> gzip
    root = write_beir(tmp_path / "beir", corpus=CORPUS | filler, qrels={"dev": qrels})
    evaluator = _evaluator(root, dev_corpus=14)
    evaluator(tiny_model)
    chosen = set(evaluator.split.corpus)
    assert len(chosen) == 14 and {d for _, d in qrels} <= chosen
    assert {"postgres", "openssh-doc"} <= chosen  # the other servers: BM25's candidates for "web server"
    assert evaluator.texts == 3 + 14
