"""Retrieval metrics on BEIR-layout splits, for models (exact search) and for built indexes.

Metric definitions follow trec_eval / pytrec_eval, which BEIR and MTEB report:

* ``recall@k`` — relevant documents in the top k / all relevant documents of the query;
* ``mrr@k`` — 1 / rank of the first relevant document within the top k, else 0;
* ``ndcg@k`` — DCG with linear gain (``rel / log2(rank + 1)``) over the ideal DCG of the qrels.

Every query of the split counts; a query with no retrieved relevant document scores 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedtune.data import RetrievalSplit, load_split
from embedtune.encoding import Encoder
from embedtune.errors import EmbedtuneError
from embedtune.index import DEFAULT_INDEXES_DIR, Index
from embedtune.models import load_model, resolve_model_path

DEFAULT_KS = (1, 10, 100)
DEFAULT_NDCG_KS = (10,)

Run = dict[str, list[str]]  # query id -> document ids, best first
Qrels = dict[str, dict[str, int]]


def recall_at_k(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    return sum(1 for d in ranked[:k] if relevant.get(d, 0) > 0) / len(relevant)


def mrr_at_k(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    for rank, doc_id in enumerate(ranked[:k], start=1):
        if relevant.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(rank + 1) for rank, d in enumerate(ranked[:k], start=1))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(rel / math.log2(rank + 1) for rank, rel in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def _check_ks(ks: Iterable[int]) -> list[int]:
    ks = sorted(set(ks))
    if not ks or ks[0] <= 0:
        raise EmbedtuneError(f"k values must be positive integers, got {ks}")
    return ks


def compute_metrics(
    run: Run, qrels: Qrels, ks: Iterable[int] = DEFAULT_KS, ndcg_ks: Iterable[int] = DEFAULT_NDCG_KS
) -> dict[str, float]:
    """Mean of each metric over all queries in ``qrels`` (missing from ``run`` = nothing retrieved)."""
    ks, ndcg_ks = _check_ks(ks), _check_ks(ndcg_ks)
    per_metric: dict[str, list[float]] = {}
    for qid, relevant in qrels.items():
        ranked = run.get(qid, [])
        for k in ks:
            per_metric.setdefault(f"recall@{k}", []).append(recall_at_k(ranked, relevant, k))
        for k in ks:
            per_metric.setdefault(f"mrr@{k}", []).append(mrr_at_k(ranked, relevant, k))
        for k in ndcg_ks:
            per_metric.setdefault(f"ndcg@{k}", []).append(ndcg_at_k(ranked, relevant, k))
    return {name: float(np.mean(values)) for name, values in per_metric.items()}


@dataclass
class EvalResult:
    """One system's scores on one split; ``to_dict`` is the JSON the CLI writes."""

    system: str
    kind: str  # "model" or "index"
    split: str
    n_queries: int
    n_documents: int
    metrics: dict[str, float]
    seconds: float
    details: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "system": self.system,
            "kind": self.kind,
            "split": self.split,
            "n_queries": self.n_queries,
            "n_documents": self.n_documents,
            "metrics": {k: round(v, 6) for k, v in self.metrics.items()},
            "seconds": round(self.seconds, 2),
            **self.details,
        }


def _score(
    system: str,
    kind: str,
    split: RetrievalSplit,
    run: Run,
    n_documents: int,
    ks: list[int],
    ndcg_ks: list[int],
    started: float,
    details: dict[str, object],
) -> EvalResult:
    return EvalResult(
        system=system,
        kind=kind,
        split=split.name,
        n_queries=len(split.queries),
        n_documents=n_documents,
        metrics=compute_metrics(run, split.qrels, ks, ndcg_ks),
        seconds=time.perf_counter() - started,
        details=details,
    )


def evaluate_model(
    model: str | Path | None,
    split: RetrievalSplit,
    *,
    ks: Iterable[int] = DEFAULT_KS,
    ndcg_ks: Iterable[int] = DEFAULT_NDCG_KS,
    batch_size: int = 32,
    precision: str = "auto",
    max_seq_length: int | None = None,
    show_progress: bool = True,
) -> EvalResult:
    """Encode the whole corpus and the split's queries with ``model``; exact cosine search."""
    import faiss

    ks, ndcg_ks = _check_ks(ks), _check_ks(ndcg_ks)
    started = time.perf_counter()
    path = resolve_model_path(model)
    st = load_model(path, max_seq_length=max_seq_length)
    doc_ids, query_ids = list(split.corpus), list(split.queries)
    encoder = Encoder(st, precision)
    doc_vectors = encoder.encode(
        list(split.corpus.values()), role="document", batch_size=batch_size, show_progress=show_progress
    )
    query_vectors = encoder.encode(
        list(split.queries.values()), role="query", batch_size=batch_size, show_progress=show_progress
    )
    index = faiss.IndexFlatIP(doc_vectors.shape[1])
    index.add(doc_vectors)
    _, rows = index.search(query_vectors, min(max(ks + ndcg_ks), len(doc_ids)))
    run = {qid: [doc_ids[r] for r in row if r >= 0] for qid, row in zip(query_ids, rows, strict=True)}
    details = {"model_path": str(path), "max_seq_length": int(st.max_seq_length)}
    system = str(model) if model is not None else "default"
    return _score(system, "model", split, run, len(doc_ids), ks, ndcg_ks, started, details)


def evaluate_index(
    index: Index,
    split: RetrievalSplit,
    *,
    ks: Iterable[int] = DEFAULT_KS,
    ndcg_ks: Iterable[int] = DEFAULT_NDCG_KS,
    show_progress: bool = True,
) -> EvalResult:
    """Search the split's queries against a built index with its own model (no corpus re-encoding)."""
    from embedtune.search import Searcher

    ks, ndcg_ks = _check_ks(ks), _check_ks(ndcg_ks)
    indexed = set(index.doc_ids)
    missing = {d for docs in split.qrels.values() for d in docs if d not in indexed}
    if missing:
        example = ", ".join(sorted(missing)[:3])
        raise EmbedtuneError(
            f"index '{index.name}' lacks {len(missing)} document(s) that {split.name} marks relevant "
            f"(e.g. {example}); was it built from another corpus?"
        )
    started = time.perf_counter()
    searcher = Searcher(index)
    query_ids = list(split.queries)
    hits = searcher.search(list(split.queries.values()), max(ks + ndcg_ks), show_progress=show_progress)
    run = {qid: [h.doc_id for h in q_hits] for qid, q_hits in zip(query_ids, hits, strict=True)}
    details = {"model_path": index.manifest.model_path, "max_seq_length": index.manifest.max_seq_length}
    return _score(f"index:{index.name}", "index", split, run, len(index), ks, ndcg_ks, started, details)


def evaluate(
    data: str | Path,
    split: str = "test",
    *,
    models: Sequence[str | Path] = (),
    indexes: Sequence[str | Path] = (),
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    **options,
) -> list[EvalResult]:
    """Evaluate several models and indexes on one split, loading the data once."""
    if not models and not indexes:
        raise EmbedtuneError("nothing to evaluate: give at least one model or index")
    loaded = [Index.load(name, indexes_dir) for name in indexes]  # fail fast, before encoding
    data_split = load_split(Path(data), split)
    index_options = {k: v for k, v in options.items() if k in ("ks", "ndcg_ks", "show_progress")}
    results = [evaluate_model(m, data_split, **options) for m in models]
    results += [evaluate_index(i, data_split, **index_options) for i in loaded]
    return results


def format_table(results: Sequence[EvalResult]) -> str:
    """A markdown table, one row per system, metrics as columns."""
    metric_names = list(results[0].metrics)
    header = ["system", *metric_names, "queries", "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r.system, *(f"{r.metrics[m]:.4f}" for m in metric_names), str(r.n_queries), f"{r.seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
