"""Retrieval metrics, the one implementation behind ``embedtune eval`` and training's dev evaluation.

Scores are computed by `pytrec_eval <https://github.com/cvangysel/pytrec_eval>`_ (trec_eval's own
code), the library BEIR and MTEB report with, so the numbers are theirs:

* ``recall@k`` — relevant documents in the top k / all relevant documents of the query;
* ``precision@k`` — relevant documents in the top k / k;
* ``ndcg@k`` — graded: gain = relevance, discount ``log2(rank + 1)``, over the ideal DCG of the qrels;
* ``map@k`` — average precision over the top k, divided by all relevant documents (``map_cut``);
* ``mrr@k`` — 1 / rank of the first relevant document if it is within the top k, else 0;
* ``hit_rate@k`` — 1 if any relevant document is in the top k, else 0 (``success``).

Ranks follow trec_eval: by score, ties broken by document id (descending). A document is relevant
when its qrels score is >= 1. Every query of the qrels counts: a query the system returned nothing
for scores 0 (trec_eval's ``-c``) and is reported, where pytrec_eval alone would silently drop it.

Two systems are compared query by query with a paired randomisation (permutation) test
(:func:`paired_p_values`, scipy's ``permutation_test``): under the null hypothesis each query's
pair of scores is exchangeable, so the p-value needs no normality assumption, unlike a t-test over
per-query scores bounded in [0, 1]. A run is written in TREC format (:func:`trec_run_lines`:
``qid Q0 docid rank score system``), which trec_eval, pytrec_eval and ranx read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from embedtune.errors import EmbedtuneError

METRIC_FAMILIES = ("recall", "precision", "mrr", "ndcg", "map", "hit_rate")
DEFAULT_METRICS = ("recall", "mrr", "ndcg@10")
DEFAULT_KS = (1, 10, 100)
# Our metric family -> pytrec_eval measure with cut-offs (mrr@k is derived from recip_rank).
_TREC_MEASURES = {"recall": "recall", "precision": "P", "ndcg": "ndcg_cut", "map": "map_cut", "hit_rate": "success"}

Qrels = Mapping[str, Mapping[str, int]]
# query id -> {doc id: score} (any order), or -> doc ids best first (scores are then derived from ranks).
Run = Mapping[str, Mapping[str, float] | Sequence[str]]


def metric_names(metrics: Iterable[str] = DEFAULT_METRICS, ks: Iterable[int] = DEFAULT_KS) -> list[str]:
    """Expand metric specs into ``family@k`` names: ``"recall"`` takes every k, ``"ndcg@10"`` one.

    >>> metric_names(["recall", "ndcg@10"], [1, 100])
    ['recall@1', 'recall@100', 'ndcg@10']
    """
    ks = sorted(set(ks))
    if not ks or ks[0] <= 0:
        raise EmbedtuneError(f"k values must be positive integers, got {ks}")
    names: list[str] = []
    for spec in metrics:
        family, _, k_text = spec.strip().lower().partition("@")
        if family not in METRIC_FAMILIES:
            raise EmbedtuneError(f"unknown metric '{spec}' (choose from {', '.join(METRIC_FAMILIES)}, optionally @k)")
        if not k_text:
            names += [f"{family}@{k}" for k in ks]
            continue
        if not k_text.isdigit() or int(k_text) <= 0:
            raise EmbedtuneError(f"metric '{spec}': k must be a positive integer")
        names.append(f"{family}@{int(k_text)}")
    if not names:
        raise EmbedtuneError("no metrics requested")
    return list(dict.fromkeys(names))


def max_cutoff(names: Iterable[str]) -> int:
    """The deepest rank any of the metrics looks at: how many results a system must return."""
    return max(int(name.rsplit("@", 1)[1]) for name in names)


@dataclass
class RunScores:
    """Metric means over all queries of the qrels, per-query values, and queries with no results."""

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]
    no_results: list[str]


def _trec_run(run: Run, qrels: Qrels, ignore_own_id: bool) -> dict[str, dict[str, float]]:
    """The run in pytrec_eval's form, for judged queries with at least one result."""
    trec: dict[str, dict[str, float]] = {}
    for qid, results in run.items():
        if qid not in qrels:
            continue
        if isinstance(results, Mapping):
            scores = {str(d): float(s) for d, s in results.items()}
        else:  # a ranking: first = highest score; a repeated id keeps its best rank
            scores = {}
            for rank, doc_id in enumerate(results):
                scores.setdefault(str(doc_id), float(len(results) - rank))
        if ignore_own_id:
            scores.pop(qid, None)
        if scores:
            trec[qid] = scores
    return trec


def compute_metrics(
    run: Run,
    qrels: Qrels,
    metrics: Iterable[str] = DEFAULT_METRICS,
    ks: Iterable[int] = DEFAULT_KS,
    *,
    ignore_own_id: bool = False,
) -> RunScores:
    """Score ``run`` against graded ``qrels`` with pytrec_eval (see the module docstring).

    ``ignore_own_id`` drops a document whose id equals the query's id from that query's results
    before scoring, as BEIR does for sets (ArguAna, Quora) where a query's own text is in the corpus.
    """
    import pytrec_eval

    names = metric_names(metrics, ks)
    if not qrels:
        raise EmbedtuneError("no judged queries to evaluate (empty qrels)")
    trec_run = _trec_run(run, qrels, ignore_own_id)
    cutoffs: dict[str, set[int]] = {}
    for name in names:
        family, k = name.split("@")
        cutoffs.setdefault(family, set()).add(int(k))
    measures = {f"{_TREC_MEASURES[f]}.{','.join(map(str, sorted(k)))}" for f, k in cutoffs.items() if f != "mrr"}
    if "mrr" in cutoffs:
        measures.add("recip_rank")
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    evaluated = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(trec_run) if trec_run else {}

    def value(trec: dict[str, float] | None, name: str) -> float:
        if trec is None:
            return 0.0
        family, k = name.split("@")
        if family == "mrr":  # recip_rank = 1 / rank of the first relevant document over the whole run
            rr = trec["recip_rank"]
            return rr if rr > 0 and round(1 / rr) <= int(k) else 0.0
        return trec[f"{_TREC_MEASURES[family]}_{k}"]

    per_query = {qid: {name: value(evaluated.get(qid), name) for name in names} for qid in qrels}
    mean = {name: float(np.mean([scores[name] for scores in per_query.values()])) for name in names}
    return RunScores(mean, per_query, [qid for qid in qrels if qid not in trec_run])


def paired_p_values(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    names: Iterable[str],
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """Two-sided p-value per metric that systems ``a`` and ``b`` (per-query scores over the same queries)
    have the same mean, by a paired randomisation test; exact when the queries are few (2^n <= resamples).

    Identical scores give p = 1; a system better on every one of many queries gives p near 1/resamples.
    """
    from scipy.stats import permutation_test

    queries = sorted(set(a) & set(b))
    if len(queries) != len(a) or len(queries) != len(b):
        raise EmbedtuneError("paired significance needs per-query scores of the same queries for both systems")
    p_values = {}
    for name in names:
        x = np.array([a[q][name] for q in queries], dtype=np.float64)
        y = np.array([b[q][name] for q in queries], dtype=np.float64)
        if np.array_equal(x, y):  # every permutation gives the same statistic
            p_values[name] = 1.0
            continue
        test = permutation_test(
            (x, y),
            lambda u, v, axis: np.mean(u - v, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=resamples,
            batch=1000,  # bounds memory to 1000 x queries values at a time
            random_state=np.random.default_rng(seed),
        )
        p_values[name] = float(test.pvalue)
    return p_values


def trec_run_lines(run: Mapping[str, Mapping[str, float]], system: str) -> Iterator[str]:
    """``run`` as TREC run lines ``qid Q0 docid rank score system``, ranked as trec_eval ranks (score
    descending, ties by document id descending); scores written exactly (``repr``) so a reader scores
    the same ranking."""
    tag = "".join(c if not c.isspace() else "_" for c in system) or "system"
    for qid, scores in run.items():
        if any(c.isspace() for c in qid) or any(c.isspace() for d in scores for c in d):
            raise EmbedtuneError(f"query '{qid}' or one of its document ids holds whitespace, which a TREC run cannot")
        ranked = sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)
        for rank, (doc_id, score) in enumerate(ranked, start=1):
            yield f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n"
