"""Comparisons users can trust: paired significance tests against the first system, and TREC run files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedtune.data import load_split
from embedtune.evaluate import EvalSettings, evaluate, format_report, write_run_files
from embedtune.metrics import compute_metrics, paired_p_values


def _scores(values: list[float]) -> dict[str, dict[str, float]]:
    return {f"q{i}": {"ndcg@10": v} for i, v in enumerate(values)}


def test_identical_systems_give_p_one_and_a_clearly_better_one_a_small_p():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.6, size=60).tolist()
    assert paired_p_values(_scores(base), _scores(base), ["ndcg@10"]) == {"ndcg@10": 1.0}
    better = [v + 0.3 for v in base]
    assert paired_p_values(_scores(base), _scores(better), ["ndcg@10"])["ndcg@10"] < 0.001
    # Small noise around the same mean is not significant.
    noisy = [v + d for v, d in zip(base, rng.normal(0, 0.01, size=60), strict=True)]
    assert paired_p_values(_scores(base), _scores(noisy), ["ndcg@10"])["ndcg@10"] > 0.05


def test_few_queries_get_an_exact_test():
    # 5 queries all better: the exact two-sided p is 2 / 2^5 (only the all-same-sign relabellings are as extreme).
    p = paired_p_values(_scores([0, 0, 0, 0, 0]), _scores([1, 1, 1, 1, 1]), ["ndcg@10"])["ndcg@10"]
    assert p == pytest.approx(2 / 32)


def test_evaluate_reports_p_values_in_json_and_table_and_writes_run_files(tmp_path, tiny_st, beir_dir):
    import pytrec_eval

    settings = EvalSettings(metrics=("ndcg@10", "recall@10"), significance=True, show_progress=False)
    results = evaluate(beir_dir, "test", models=[tiny_st, tiny_st], bm25=True, settings=settings)
    bm25, model, same = results
    assert bm25.p_values is None and model.compared_with == "bm25" and set(model.p_values) == {"ndcg@10", "recall@10"}
    assert same.p_values == model.p_values
    out = json.loads(json.dumps(model.to_dict()))
    assert out["significance"]["compared_with"] == "bm25" and "ndcg@10" in out["significance"]["p_values"]
    assert "paired randomisation" in format_report(results)

    paths = write_run_files(results, tmp_path / "runs")
    split = results[0].split.replace("/", "-")
    assert [p.name for p in paths] == [
        f"{i}-{n}.{split}.run" for i, n in ((1, "bm25"), (2, tiny_st.name), (3, tiny_st.name))
    ]
    qrels = load_split(beir_dir, "test").qrels
    for path, result in zip(paths, results, strict=True):
        first = path.read_text().splitlines()[0].split()
        assert len(first) == 6 and first[1] == "Q0" and first[3] == "1"
        with path.open() as f:
            parsed = pytrec_eval.parse_run(f)
        rescored = compute_metrics(parsed, qrels, ("ndcg@10", "recall@10")).mean
        assert rescored == pytest.approx(result.metrics)


def test_the_same_model_twice_is_not_significantly_different(tmp_path, tiny_st, beir_dir):
    settings = EvalSettings(metrics=("ndcg@10",), significance=True, show_progress=False)
    first, second = evaluate(beir_dir, "test", models=[tiny_st, tiny_st], settings=settings)
    assert second.p_values == {"ndcg@10": 1.0} and second.compared_with == first.system
