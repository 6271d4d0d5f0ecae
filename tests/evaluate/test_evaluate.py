"""Metrics against hand-worked values and against pytrec_eval itself; end-to-end model/index/BM25 evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import CORPUS, write_beir

from embedtune.data import load_split
from embedtune.encoding import EncodeSettings
from embedtune.errors import EmbedtuneError
from embedtune.evaluate import EvalSettings, evaluate, evaluate_bm25, evaluate_index, evaluate_model, own_id_warnings
from embedtune.index import Index, build_index
from embedtune.metrics import compute_metrics, metric_names
from embedtune.retrieval import DenseRetriever, RetrievalInput

QRELS = {
    "q1": {"a": 1},  # found at rank 2
    "q2": {"b": 1, "c": 1},  # b at rank 1, c at rank 3
    "q3": {"d": 2, "e": 1},  # graded: only e found, at rank 1
    "q4": {"f": 1},  # never retrieved (absent from the run)
}
RUN = {
    "q1": ["x", "a", "y"],
    "q2": ["b", "x", "c"],
    "q3": ["e", "x", "y"],
}
ALL = ("recall", "precision", "mrr", "ndcg", "map", "hit_rate")


def test_metrics_by_hand():
    scores = compute_metrics(RUN, QRELS, ALL, ks=(1, 2, 3))
    m = scores.mean
    # recall@1: q1 0, q2 1/2, q3 1/2 (e of {d, e}), q4 0
    assert m["recall@1"] == pytest.approx((0 + 0.5 + 0.5 + 0) / 4)
    assert m["recall@2"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)
    assert m["recall@3"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert m["precision@2"] == pytest.approx((0.5 + 0.5 + 0.5 + 0) / 4)
    assert m["mrr@1"] == pytest.approx((0 + 1 + 1 + 0) / 4)
    assert m["mrr@3"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert m["hit_rate@1"] == pytest.approx(2 / 4) and m["hit_rate@2"] == pytest.approx(3 / 4)
    # AP@3 divides by all relevant documents: q1 (1/2)/1, q2 (1 + 2/3)/2, q3 1/2.
    assert m["map@3"] == pytest.approx((0.5 + (1 + 2 / 3) / 2 + 0.5 + 0) / 4)
    # nDCG@3, linear gain rel / log2(rank + 1):
    q1 = (1 / math.log2(3)) / 1
    q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    q3 = 1 / (2 + 1 / math.log2(3))  # e (rel 1) at rank 1; ideal has d (rel 2) first
    assert m["ndcg@3"] == pytest.approx((q1 + q2 + q3 + 0) / 4)
    assert scores.per_query["q2"]["ndcg@3"] == pytest.approx(q2)
    assert scores.no_results == ["q4"] and scores.per_query["q4"]["recall@3"] == 0.0


def test_ties_are_broken_like_trec_eval():
    # Equal scores: trec_eval ranks the larger document id first, whatever order they were given in.
    scores = compute_metrics({"q": {"a": 0.5, "z": 0.5}}, {"q": {"a": 1}}, ["mrr@1", "mrr@2"])
    assert scores.mean == {"mrr@1": 0.0, "mrr@2": 0.5}


def _random_case(seed: int):
    """Graded qrels (0-3) over 40 documents and a run with tied scores, missing and empty queries."""
    rng = np.random.default_rng(seed)
    docs = [f"d{i:02d}" for i in range(40)]
    qrels, run = {}, {}
    for q in range(30):
        qid = f"q{q}"
        judged = rng.choice(docs, size=int(rng.integers(1, 8)), replace=False)
        qrels[qid] = {d: int(rng.integers(0, 4)) for d in judged}
        qrels[qid][judged[0]] = max(1, qrels[qid][judged[0]])  # at least one relevant document
        if q % 10 == 9:
            continue  # no results at all
        retrieved = rng.choice(docs, size=int(rng.integers(0, 30)), replace=False)
        run[qid] = {d: float(np.round(rng.random(), 1)) for d in retrieved}  # rounding makes ties
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_equals_pytrec_eval(seed):
    import pytrec_eval

    qrels, run = _random_case(seed)
    ks = (1, 3, 5, 10, 20)
    ours = compute_metrics(run, qrels, ALL, ks)
    evaluated = pytrec_eval.RelevanceEvaluator(
        qrels,
        {"recall.1,3,5,10,20", "P.1,3,5,10,20", "ndcg_cut.1,3,5,10,20", "map_cut.1,3,5,10,20", "success.1,3,5,10,20"},
    ).evaluate({q: r for q, r in run.items() if r})
    measure = {"recall": "recall", "precision": "P", "ndcg": "ndcg_cut", "map": "map_cut", "hit_rate": "success"}
    for k in ks:
        # MRR@k reference: trec_eval's recip_rank on the run cut at k in trec_eval's order (score, then id, descending).
        cut = {q: dict(sorted(r.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k]) for q, r in run.items() if r}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
        for family in ALL:
            name = f"{family}@{k}"
            expected = [
                (rr[q]["recip_rank"] if family == "mrr" else evaluated[q][f"{measure[family]}_{k}"])
                if q in cut
                else 0.0
                for q in qrels
            ]
            got = [ours.per_query[q][name] for q in qrels]
            np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=name)
            assert ours.mean[name] == pytest.approx(np.mean(expected), abs=1e-6)
    assert sorted(ours.no_results) == sorted(q for q in qrels if not run.get(q))


def test_ignore_own_id_drops_the_query_document():
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"q1": 0.99, "d1": 0.9}}
    assert compute_metrics(run, qrels, ["mrr@1"]).mean["mrr@1"] == 0.0
    assert compute_metrics(run, qrels, ["mrr@1"], ignore_own_id=True).mean["mrr@1"] == 1.0
    # A query whose only result was itself has no results left.
    assert compute_metrics({"q1": ["q1"]}, qrels, ["recall@1"], ignore_own_id=True).no_results == ["q1"]


def test_metric_specs_and_bad_k():
    assert metric_names(["recall", "NDCG@10", "recall@10"], [10, 1]) == ["recall@1", "recall@10", "ndcg@10"]
    with pytest.raises(EmbedtuneError, match="positive"):
        compute_metrics(RUN, QRELS, ks=(0, 10))
    with pytest.raises(EmbedtuneError, match="positive"):
        EvalSettings(metrics=("ndcg@0",))
    with pytest.raises(EmbedtuneError, match="unknown metric 'f1'"):
        EvalSettings(metrics=("f1",))
    with pytest.raises(EmbedtuneError, match="empty qrels"):
        compute_metrics(RUN, {})


def _echo_split(tmp_path):
    """Queries whose text is their relevant document's text: any encoder ranks that document first."""
    queries = {"q-ssh": CORPUS["openssh"], "q-db": CORPUS["postgres"]}
    qrels = {"test": [("q-ssh", "openssh"), ("q-ssh", "openssh-doc"), ("q-db", "postgres")]}
    return write_beir(tmp_path / "echo", queries=queries, qrels=qrels)


QUIET = EvalSettings(ks=(1, 10), show_progress=False)


def test_evaluate_model_index_and_bm25_agree_with_hand_values(tmp_path, tiny_st):
    root = _echo_split(tmp_path)
    split = load_split(root, "test")
    result = evaluate_model(tiny_st, split, QUIET)
    # q-ssh: openssh first (identical text), openssh-doc somewhere in the 8 documents.
    assert result.metrics["recall@1"] == pytest.approx((0.5 + 1) / 2)
    assert result.metrics["recall@10"] == pytest.approx(1.0)
    assert result.metrics["mrr@1"] == pytest.approx(1.0)
    assert result.n_queries == 2 and result.n_documents == len(CORPUS) and result.no_results == 0

    bm25 = evaluate_bm25(split, QUIET)  # the identical text has every term: BM25 ranks it first too
    assert bm25.kind == "bm25" and bm25.metrics["mrr@1"] == pytest.approx(1.0)

    build_index(root, "echo", model=tiny_st, indexes_dir=tmp_path / "idx", show_progress=False)
    both = evaluate(root, "test", models=[str(tiny_st)], indexes=["echo"], indexes_dir=tmp_path / "idx", settings=QUIET)
    assert [r.kind for r in both] == ["model", "index"]
    for name, value in both[0].metrics.items():
        assert both[1].metrics[name] == pytest.approx(value, abs=1e-6)


def _word_split(tmp_path):
    """60 documents of shuffled words and 12 queries, so a depth of 5 fetches far less than the corpus."""
    rng = np.random.default_rng(0)
    words = " ".join(CORPUS.values()).split()
    corpus = {f"d{i}": " ".join(rng.choice(words, size=8)) for i in range(60)}
    queries = {f"q{i}": " ".join(rng.choice(words, size=3)) for i in range(12)}
    qrels = {"test": [(f"q{i}", f"d{j}") for i in range(12) for j in rng.choice(60, size=2, replace=False)]}
    return load_split(write_beir(tmp_path / "words", corpus=corpus, queries=queries, qrels=qrels), "test")


def test_evaluate_model_equals_a_strict_fp32_exact_search(tmp_path, tiny_st):
    # bf16 vectors make the dense retriever search in bf16, then rescore its candidates in fp32: the
    # ranking and the scores (hence every metric) are those of a strict fp32 search over the same vectors.
    split = _word_split(tmp_path)
    settings = EvalSettings(metrics=("recall", "mrr", "ndcg"), ks=(1, 5), per_query=True, show_progress=False)
    encoding = EncodeSettings(precision="bf16", cache=False)
    result = evaluate_model(tiny_st, split, settings, encoding)
    data = RetrievalInput.from_split(split)
    fast = DenseRetriever.encode(tiny_st, data, encoding, show_progress=False)
    strict = DenseRetriever(fast.doc_vectors, fast.query_vectors, precision="fp32")
    assert (fast.precision, strict.precision, result.details["precision"]) == ("bf16", "fp32", "bf16")
    query_rows = np.arange(len(data.query_ids))
    scores, rows = strict.search(query_rows, settings.depth)
    fast_scores, fast_rows = fast.search(query_rows, settings.depth)
    np.testing.assert_array_equal(fast_rows, rows)
    np.testing.assert_allclose(fast_scores, scores, atol=1e-6)
    run = {
        q: {data.doc_ids[r]: float(s) for s, r in zip(q_scores, q_rows, strict=True)}
        for q, q_scores, q_rows in zip(data.query_ids, scores, rows, strict=True)
    }
    expected = compute_metrics(run, split.qrels, settings.metrics, settings.ks)
    assert result.metrics == pytest.approx(expected.mean, abs=1e-6)
    for q, values in expected.per_query.items():
        assert result.per_query[q] == pytest.approx(values, abs=1e-6)


def test_own_id_warnings_point_both_ways(tmp_path, beir_dir):
    # Queries that are corpus documents too (own text in the corpus, not judged relevant to itself).
    corpus = {**CORPUS, "q-ssh": "secure shell"}
    qrels = {"test": [("q-ssh", "openssh"), ("q-ssh", "openssh-doc")]}
    root = write_beir(tmp_path / "own", corpus=corpus, qrels=qrels)
    split = load_split(root, "test")
    assert "set ignore_own_id" in own_id_warnings(split, ignore_own_id=False)[0]
    assert own_id_warnings(split, ignore_own_id=True) == []
    # BM25 finds the query's own text first; ignoring it puts an OpenSSH document at rank 1.
    settings = EvalSettings(metrics=("mrr@1",), show_progress=False)
    assert evaluate_bm25(split, settings).metrics["mrr@1"] == 0.0
    ignoring = EvalSettings(metrics=("mrr@1",), ignore_own_id=True, show_progress=False)
    assert evaluate_bm25(split, ignoring).metrics["mrr@1"] == 1.0
    # The other way round: a query whose own id is its relevant document (as in data/debian).
    same_id = load_split(write_beir(tmp_path / "same", qrels={"test": [("q-ssh", "q-ssh")]}, corpus=corpus), "test")
    assert "unreachable" in own_id_warnings(same_id, ignore_own_id=True)[0]


def test_queries_without_results_count_as_zero_and_are_reported(tmp_path):
    queries = {"q-web": "web server", "q-stop": "the and of"}  # only stop words: BM25 has nothing
    root = write_beir(tmp_path / "b", queries=queries, qrels={"test": [("q-web", "nginx"), ("q-stop", "vim")]})
    result = evaluate_bm25(load_split(root, "test"), EvalSettings(per_query=True, show_progress=False))
    assert result.no_results == 1 and result.per_query["q-stop"]["recall@100"] == 0.0
    assert result.metrics["recall@1"] == pytest.approx(0.5)
    assert any("no results for 1 of 2 queries" in w and "q-stop" in w for w in result.warnings)
    assert result.to_dict()["per_query"]["q-web"]["mrr@1"] == 1.0


def test_index_from_another_corpus_is_refused(tmp_path, tiny_st):
    small = write_beir(
        tmp_path / "small",
        corpus={k: v for k, v in CORPUS.items() if k != "postgres"},
        qrels={"test": [("q-ssh", "openssh")]},
    )
    build_index(small, "small", model=tiny_st, indexes_dir=tmp_path / "idx", show_progress=False)
    full = load_split(write_beir(tmp_path / "full"), "test")
    with pytest.raises(EmbedtuneError, match=r"lacks 1 document\(s\).*postgres"):
        evaluate_index(Index.load("small", tmp_path / "idx"), full, QUIET)
