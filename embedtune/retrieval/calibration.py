"""Calibration of a built index on real queries: its search knob, and the hybrid fusion and default mode.

A build calibrates ``nprobe``/``efSearch`` on query-like probes (the data's own dev queries, else
titles or first sentences: :mod:`embedtune.index.knobs`), a stand-in for the queries the index will
get. :func:`calibrate_index` encodes the judged queries of a split
(``dev``: the fusion weight is chosen here and must never see test queries), calibrates the knob on
half of them to the index's target recall and reports the recall on the other half, so the promise
is checked on queries it was not tuned on. Then, for an index with a BM25 side, it scores dense,
BM25 and every fusion (min-max, z-score and RRF over a grid of dense weights) by nDCG@10 on all the
split's queries, keeps the best fusion, and makes hybrid the index's default mode only if it beats
both single modes there; every ranking it scores is made by the
:class:`~embedtune.retrieval.Searcher`'s own steps, so what it measured is what ``search`` returns.
Everything is committed as a new generation of the manifest
(``index info`` shows it), so the search of every consumer follows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.index import DEFAULT_INDEXES_DIR, Index, Manifest
from embedtune.index.knobs import QueryRecall, calibrate_queries
from embedtune.index.manifest import now
from embedtune.index.update import set_calibration
from embedtune.metrics import compute_metrics
from embedtune.retrieval.fusion import FUSIONS
from embedtune.retrieval.searcher import Searcher, SearchSettings
from embedtune.splits import load_retrieval

WEIGHTS = tuple(round(i * 0.05, 2) for i in range(1, 20))  # dense weights tried (0 and 1 are the single modes)
MIN_HELD_OUT = 20  # fewer judged queries than twice this: calibrate and report on all of them


def calibrate_index(
    index: str | Path,
    data: str | Path,
    split: str = "dev",
    *,
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    target_recall: float | None = None,
    depth: int = 100,
    seed: int = 0,
    show_progress: bool = True,
) -> Manifest:
    """Calibrate ``index`` on the judged queries of ``data``'s ``split``; returns the committed manifest."""
    if split == "test":
        raise EmbedtuneError("split 'test' must not tune the index (its numbers would be optimistic); use dev")
    if depth < 10:
        raise EmbedtuneError(f"depth must be at least 10 (nDCG@10 is compared), got {depth}")
    loaded = Index.load(index, indexes_dir, mmap=False)
    try:
        judged = load_retrieval(Path(data), split)
        qids = [q for q in judged.qrels if q in judged.queries]
        _check_corpus(loaded, judged.qrels, f"{data} ({split})")
        texts = [judged.queries[q] for q in qids]
        searcher = Searcher(loaded, settings=SearchSettings(mode="dense"))
        vectors = searcher.encode_queries(texts, show_progress=show_progress)
        target = target_recall if target_recall is not None else float(loaded.manifest.calibration.get("target", 0.99))
        knobs, recall = _calibrate_knob(loaded, vectors, target, seed)
        result = {"data": str(data), "split": split, "queries": len(qids), "recall_at_10": recall, "at": now()}
        if loaded.has_bm25:
            qrels = {q: judged.qrels[q] for q in qids}
            result |= _choose_mode(searcher, qids, texts, vectors, qrels, knobs, depth)
    finally:
        loaded.close()
    return set_calibration(index, indexes_dir=indexes_dir, search_defaults=knobs, query_calibration=result)


def _check_corpus(index: Index, qrels: dict[str, dict[str, int]], source: str) -> None:
    relevant = {d for docs in qrels.values() for d, r in docs.items() if r > 0}
    if not relevant:
        raise EmbedtuneError(f"{source}: no judged relevant documents to calibrate on")
    if not relevant & set(index.doc_ids):
        raise EmbedtuneError(
            f"index '{index.name}' holds none of the documents {source} marks relevant; another corpus?"
        )


def _calibrate_knob(index: Index, vectors: np.ndarray, target: float, seed: int) -> tuple[dict[str, int], dict]:
    """The knob tuned on half the queries, and recall@10 on those and on the other (held-out) half."""
    order = np.random.default_rng(seed).permutation(len(vectors))
    half = len(vectors) // 2 if len(vectors) >= 2 * MIN_HELD_OUT else len(vectors)
    tune, held = vectors[np.sort(order[:half])], vectors[np.sort(order[half:])]
    calibration = calibrate_queries(index, tune, target)
    recall = {"target": target, "tuned_on": len(tune), "tuned": calibration.recall_at_10}
    if len(held):
        recall |= {"held_out": len(held), "held_out_recall": round(QueryRecall(index, held)(calibration.knobs), 4)}
    return calibration.knobs, recall


def _choose_mode(
    searcher: Searcher,
    qids: list[str],
    texts: list[str],
    vectors: np.ndarray,
    qrels: dict[str, dict[str, int]],
    knobs: dict[str, int],
    depth: int,
) -> dict[str, object]:
    """nDCG@10 of dense, BM25 and each fusion on these queries; the best fusion and the default mode.

    Every ranking scored is the one a search at k=10 with those settings returns (the searcher's own
    steps, with the knobs just calibrated); the first-stage lists are made once for the whole grid."""
    hybrid = searcher.plan(SearchSettings(mode="hybrid", depth=depth, **knobs))
    runs = searcher.first_stage(texts, 10, hybrid, vectors=vectors)
    single = {mode: searcher.rank(texts, 10, replace(hybrid, mode=mode), vectors=vectors) for mode in ("dense", "bm25")}
    docs = searcher.index.lookup({int(f) for _, ids in [*runs, *single.values()] for f in ids.ravel() if f >= 0})

    def ndcg(scores: np.ndarray, ids: np.ndarray) -> float:
        run = {
            q: {docs[int(f)].doc_id: float(s) for s, f in zip(q_scores, q_ids, strict=True) if f >= 0}
            for q, q_scores, q_ids in zip(qids, scores, ids, strict=True)
        }
        return compute_metrics(run, qrels, ("ndcg@10",), (10,)).mean["ndcg@10"]

    def fused(method: str, weight: float) -> tuple[np.ndarray, np.ndarray]:
        return searcher.combine(runs, 10, replace(hybrid, fusion=method, weight=weight))

    scores = {mode: ndcg(*ranked) for mode, ranked in single.items()}
    grid = {(m, w): ndcg(*fused(m, w)) for m in FUSIONS for w in WEIGHTS}
    (method, weight), best = max(grid.items(), key=lambda item: item[1])  # first of equals: grid order
    for m in FUSIONS:
        scores[m] = max(v for (gm, _), v in grid.items() if gm == m)
    single = max(("dense", "bm25"), key=lambda mode: scores[mode])
    mode = "hybrid" if best > scores[single] + 1e-9 else single
    return {
        "ndcg_at_10": {k: round(v, 4) for k, v in scores.items()} | {"hybrid": round(best, 4)},
        "fusion": {"method": method, "weight": weight, "depth": depth},
        "default_mode": mode,
    }
