"""One way to rank an index: ``search --json``, the service, ``evaluate()``'s run, the Python ``Searcher`` and
calibration's own scoring give the same ids, in the same order, with the same scores, in every mode.

The index is calibrated on real queries (so each mode's nDCG@10 that calibration scored can be checked
against ``eval``'s), then given a hybrid default with a fusion no default would pick, so that a path
that ignored the index's calibrated mode or fusion would show here.
"""

from __future__ import annotations

import json

import pytest
from helpers import QRELS, QUERIES, run, write_beir
from http_client import call

from embedtune.encoding import EncodeSettings
from embedtune.evaluate import EvalSettings, evaluate
from embedtune.index import Index, build_index
from embedtune.index.update import set_calibration
from embedtune.retrieval import Searcher, SearchSettings
from embedtune.retrieval.calibration import calibrate_index

K, DEPTH = 3, 5  # hits compared; candidates the cross-encoder reranks
JUDGED = [pair for pairs in QRELS.values() for pair in pairs]  # every query judged, in dev and in test


@pytest.fixture
def beir(tmp_path):
    return write_beir(tmp_path / "beir", qrels={"train": QRELS["train"], "dev": JUDGED, "test": JUDGED})


@pytest.fixture
def indexes_dir(tmp_path, tiny_st, beir):
    """``tiny``: the handmade corpus with a BM25 side, indexed with the tiny model in fp32 (the service's fixture)."""
    folder = tmp_path / "indexes"
    build_index(beir, "tiny", model=tiny_st, indexes_dir=folder, encode=EncodeSettings(precision="fp32"))
    return folder


def _hits(hits) -> list[list[tuple[str, float]]]:
    return [[(h.doc_id, pytest.approx(h.score, abs=1e-5)) for h in query_hits] for query_hits in hits]


def _settings(mode: str | None, reranker) -> SearchSettings:
    return SearchSettings(mode=mode, rerank=reranker, rerank_depth=DEPTH)


def _cli(indexes_dir, tmp_path, mode: str | None, reranker) -> list[list[tuple[str, float]]]:
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    options = (["--mode", mode] if mode else []) + (["--rerank", reranker, "--rerank-depth", DEPTH] if reranker else [])
    args = ("search", "--index", "tiny", "--indexes-dir", indexes_dir, "--queries", queries, "-k", K, "--json")
    printed = [json.loads(line) for line in run(*args, *options).output.splitlines() if line.startswith("{")]
    return [[(h["id"], h["score"]) for h in q["hits"]] for q in printed]


def _service(base: str, mode: str | None, reranker) -> list[list[tuple[str, float]]]:
    body = {"queries": list(QUERIES.values()), "k": K} | ({"mode": mode} if mode else {})
    body |= {"rerank": True, "rerank_depth": DEPTH} if reranker else {}
    status, got, _ = call(base, "/search", body)
    assert status == 200, got
    return [[(h["id"], h["score"]) for h in q["hits"]] for q in got["results"]]


def _eval(beir, indexes_dir, mode: str | None, reranker) -> list[list[tuple[str, float]]]:
    search = _settings(mode, reranker) if mode or reranker else None
    settings = EvalSettings(show_progress=False)
    (result,) = evaluate(beir, "test", indexes=["tiny"], indexes_dir=indexes_dir, settings=settings, search=search)
    return [list(result.run[q].items())[:K] for q in QUERIES]


def test_every_way_of_ranking_gives_the_same_ranking(beir, indexes_dir, tmp_path, serve, tiny_cross_encoder):
    calibrated = calibrate_index("tiny", beir, "dev", indexes_dir=indexes_dir, show_progress=False)
    # Calibration's own scoring is the searcher's: eval on the same queries scores each mode as it did.
    scored = calibrated.query_calibration["ndcg_at_10"]
    fusion = calibrated.query_calibration["fusion"]
    chosen = {"fusion": fusion["method"], "weight": fusion["weight"]}
    for mode, given in (("dense", {}), ("bm25", {}), ("hybrid", chosen)):
        search = SearchSettings(mode=mode, **given)
        settings = EvalSettings(metrics=("ndcg",), ks=(10,), show_progress=False)
        (result,) = evaluate(beir, "dev", indexes=["tiny"], indexes_dir=indexes_dir, settings=settings, search=search)
        assert result.metrics["ndcg@10"] == pytest.approx(scored[mode], abs=1e-4), mode

    hybrid = {"method": "zscore", "weight": 0.3, "depth": 100}
    set_calibration(
        "tiny",
        indexes_dir=indexes_dir,
        search_defaults=calibrated.search_defaults,
        query_calibration=dict(calibrated.query_calibration, default_mode="hybrid", fusion=hybrid),
    )
    assert Index.load("tiny", indexes_dir).manifest.default_mode == "hybrid"
    base = serve(rerank=tiny_cross_encoder)
    texts = list(QUERIES.values())
    for mode in (None, "dense", "bm25", "hybrid"):
        for reranker in (None, tiny_cross_encoder):
            searcher = Searcher.open("tiny", indexes_dir=indexes_dir, settings=_settings(mode, reranker))
            python = _hits(searcher.search(texts, K))
            case = f"mode {mode or 'default'}{' + rerank' if reranker else ''}"
            assert _cli(indexes_dir, tmp_path, mode, reranker) == python, case
            assert _service(base, mode, reranker) == python, case
            assert _eval(beir, indexes_dir, mode, reranker) == python, case

    # The default is the calibrated hybrid with its own fusion, not minmax at 0.5.
    def searched(**given) -> list[list[tuple[str, float]]]:
        settings = SearchSettings(**given) if given else None
        return _hits(Searcher.open("tiny", indexes_dir=indexes_dir, settings=settings).search(texts, K))

    assert searched() == searched(mode="hybrid", fusion="zscore", weight=0.3)
    assert searched() != searched(mode="hybrid", fusion="minmax", weight=0.5)
