"""Evaluation of models (exact search), built indexes and BM25 on BEIR-layout splits.

Metrics come from :mod:`embedtune.metrics` (pytrec_eval, as BEIR and MTEB report), the same code
training's dev evaluation scores with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedtune.data import RetrievalSplit, load_split
from embedtune.encoding import CacheOption, Encoder, prompt_names
from embedtune.errors import EmbedtuneError
from embedtune.index import DEFAULT_INDEXES_DIR, Index
from embedtune.metrics import DEFAULT_KS, DEFAULT_METRICS, Run, compute_metrics, max_cutoff, metric_names
from embedtune.models import load_model, resolve_model_path


@dataclass
class EvalResult:
    """One system's scores on one split; ``to_dict`` is the JSON the CLI writes."""

    system: str
    kind: str  # "model", "index" or "bm25"
    split: str
    n_queries: int
    n_documents: int
    metrics: dict[str, float]
    seconds: float
    details: dict[str, object] = field(default_factory=dict)
    no_results: int = 0
    warnings: list[str] = field(default_factory=list)
    per_query: dict[str, dict[str, float]] | None = None

    def to_dict(self) -> dict:
        out = {
            "system": self.system,
            "kind": self.kind,
            "split": self.split,
            "n_queries": self.n_queries,
            "n_documents": self.n_documents,
            "metrics": {k: round(v, 6) for k, v in self.metrics.items()},
            "seconds": round(self.seconds, 2),
            "no_results": self.no_results,
            "warnings": self.warnings,
            **self.details,
        }
        if self.per_query is not None:
            out["per_query"] = {q: {k: round(v, 6) for k, v in s.items()} for q, s in self.per_query.items()}
        return out


@dataclass(frozen=True)
class EvalSettings:
    """What every system of one evaluation is scored with."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    ks: tuple[int, ...] = DEFAULT_KS
    ignore_own_id: bool = False
    per_query: bool = False
    show_progress: bool = True

    def __post_init__(self) -> None:
        metric_names(self.metrics, self.ks)  # fail on a bad metric or k now, not after minutes of encoding

    @property
    def names(self) -> list[str]:
        return metric_names(self.metrics, self.ks)

    @property
    def depth(self) -> int:
        """Results to fetch per query: one more when the query's own document will be dropped."""
        return max_cutoff(self.names) + int(self.ignore_own_id)


def own_id_warnings(split: RetrievalSplit, ignore_own_id: bool) -> list[str]:
    """Point out when ``ignore_own_id`` is probably wrong either way for this split."""
    if ignore_own_id:
        lost = sum(1 for q, docs in split.qrels.items() if q in docs)
        if lost:
            return [
                f"{lost} of {len(split.qrels)} queries mark the document with their own id relevant; "
                "ignoring own ids makes those documents unreachable"
            ]
        return []
    shadowed = sum(1 for q, docs in split.qrels.items() if q in split.corpus and q not in docs)
    if shadowed:
        return [
            f"{shadowed} of {len(split.qrels)} queries share their id with a corpus document not marked relevant "
            "to them; if that document is the query's own text (ArguAna-style sets), pass --ignore-own-id"
        ]
    return []


def _score(
    system: str,
    kind: str,
    split: RetrievalSplit,
    run: Run,
    n_documents: int,
    settings: EvalSettings,
    started: float,
    details: dict[str, object],
) -> EvalResult:
    scores = compute_metrics(run, split.qrels, settings.metrics, settings.ks, ignore_own_id=settings.ignore_own_id)
    warnings = own_id_warnings(split, settings.ignore_own_id)
    if scores.no_results:
        example = ", ".join(scores.no_results[:3])
        warnings.append(
            f"{system}: no results for {len(scores.no_results)} of {len(split.qrels)} queries "
            f"(counted as 0; e.g. {example})"
        )
    return EvalResult(
        system=system,
        kind=kind,
        split=split.name,
        n_queries=len(split.qrels),
        n_documents=n_documents,
        metrics=scores.mean,
        seconds=time.perf_counter() - started,
        details={**details, "ignore_own_id": settings.ignore_own_id},
        no_results=len(scores.no_results),
        warnings=warnings,
        per_query=scores.per_query if settings.per_query else None,
    )


def evaluate_model(
    model: str | Path | None,
    split: RetrievalSplit,
    settings: EvalSettings = EvalSettings(),
    *,
    batch_size: int = 32,
    precision: str = "auto",
    max_seq_length: int | None = None,
    cache: CacheOption = True,
) -> EvalResult:
    """Encode the whole corpus and the split's queries with ``model``; exact cosine search.

    With ``cache`` (see :class:`~embedtune.encoding.Encoder`) a corpus this model has encoded before,
    in this precision, is read back instead of re-encoded.
    """
    import faiss

    started = time.perf_counter()
    path = resolve_model_path(model)
    st = load_model(path, max_seq_length=max_seq_length)
    doc_ids = list(split.corpus)
    encoder = Encoder(st, precision, cache=cache)
    progress = settings.show_progress
    query_prompt, document_prompt = prompt_names(st)
    doc_vectors = encoder.encode(
        list(split.corpus.values()), prompt_name=document_prompt, batch_size=batch_size, show_progress=progress
    )
    query_vectors = encoder.encode(
        list(split.queries.values()), prompt_name=query_prompt, batch_size=batch_size, show_progress=progress
    )
    index = faiss.IndexFlatIP(doc_vectors.shape[1])
    index.add(doc_vectors)
    scores, rows = index.search(query_vectors, min(settings.depth, len(doc_ids)))
    run = {
        qid: {doc_ids[r]: float(s) for s, r in zip(q_scores, q_rows, strict=True) if r >= 0}
        for qid, q_scores, q_rows in zip(split.queries, scores, rows, strict=True)
    }
    details = {"model_path": str(path), "max_seq_length": int(st.max_seq_length), "precision": encoder.precision}
    system = str(model) if model is not None else "default"
    return _score(system, "model", split, run, len(doc_ids), settings, started, details)


def evaluate_index(index: Index, split: RetrievalSplit, settings: EvalSettings = EvalSettings()) -> EvalResult:
    """Search the split's queries with the index's own search and model (no corpus re-encoding).

    Whatever the index loses to approximate search shows in its scores.
    """
    from embedtune.index import Searcher

    indexed = set(index.doc_ids)
    missing = {d for docs in split.qrels.values() for d in docs if d not in indexed}
    if missing:
        example = ", ".join(sorted(missing)[:3])
        raise EmbedtuneError(
            f"index '{index.name}' lacks {len(missing)} document(s) that {split.name} marks relevant "
            f"(e.g. {example}); was it built from another corpus?"
        )
    started = time.perf_counter()
    hits = Searcher(index).search(list(split.queries.values()), settings.depth, show_progress=settings.show_progress)
    run = {qid: {h.doc_id: h.score for h in q_hits} for qid, q_hits in zip(split.queries, hits, strict=True)}
    details = {"model_path": index.manifest.model_path, "max_seq_length": index.manifest.max_seq_length}
    return _score(f"index:{index.name}", "index", split, run, len(index), settings, started, details)


def evaluate_bm25(
    split: RetrievalSplit, settings: EvalSettings = EvalSettings(), *, k1: float = 1.2, b: float = 0.75
) -> EvalResult:
    """BM25 over the split's corpus (see :mod:`embedtune.bm25`), the lexical baseline."""
    from embedtune.bm25 import BM25

    started = time.perf_counter()
    bm25 = BM25(split.corpus, k1=k1, b=b, show_progress=settings.show_progress)
    hits = bm25.search(list(split.queries.values()), settings.depth, show_progress=settings.show_progress)
    run = {qid: dict(q_hits) for qid, q_hits in zip(split.queries, hits, strict=True)}
    return _score("bm25", "bm25", split, run, len(bm25), settings, started, {"k1": k1, "b": b})


def evaluate(
    data: str | Path,
    split: str = "test",
    *,
    models: Sequence[str | Path] = (),
    indexes: Sequence[str | Path] = (),
    bm25: bool = False,
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    settings: EvalSettings = EvalSettings(),
    batch_size: int = 32,
    precision: str = "auto",
    max_seq_length: int | None = None,
    cache: CacheOption = True,
) -> list[EvalResult]:
    """Evaluate BM25, models and indexes (in that order) on one split, loading the data once."""
    if not models and not indexes and not bm25:
        raise EmbedtuneError("nothing to evaluate: give at least one model, index or --bm25")
    loaded = [Index.load(name, indexes_dir) for name in indexes]  # fail fast, before encoding
    data_split = load_split(Path(data), split)
    results = [evaluate_bm25(data_split, settings)] if bm25 else []
    encode = {"batch_size": batch_size, "precision": precision, "max_seq_length": max_seq_length, "cache": cache}
    results += [evaluate_model(m, data_split, settings, **encode) for m in models]
    results += [evaluate_index(i, data_split, settings) for i in loaded]
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


def format_report(results: Sequence[EvalResult]) -> str:
    """Markdown for a results file: per split, a line of sizes and the side-by-side table."""
    sections = []
    for split in dict.fromkeys(r.split for r in results):
        rows = [r for r in results if r.split == split]
        head = f"{split}: {rows[0].n_queries} queries, {rows[0].n_documents} documents"
        if rows[0].details.get("ignore_own_id"):
            head += " (own ids ignored)"
        sections.append(f"{head}\n\n{format_table(rows)}\n")
    return "\n".join(sections)


def plot_results(results: Sequence[EvalResult], title: str | None = None) -> bytes:
    """A grouped bar chart as PNG bytes: one panel per split, metrics on x, one bar per system."""
    from embedtune.plots import figure, png_bytes

    splits = list(dict.fromkeys(r.split for r in results))
    with figure(1, len(splits), figsize=(max(6, 7 * len(splits)), 4.4), squeeze=False) as (fig, axes):
        for ax, split in zip(axes[0], splits, strict=True):
            rows = [r for r in results if r.split == split]
            names = list(rows[0].metrics)
            width = 0.8 / len(rows)
            for i, r in enumerate(rows):
                x = np.arange(len(names)) + (i - (len(rows) - 1) / 2) * width
                bars = ax.bar(x, [r.metrics[n] for n in names], width, label=r.system)
                ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
            ax.set_xticks(np.arange(len(names)), names)
            ax.set_ylim(0, 1.08)
            ax.set_title(f"{split} ({rows[0].n_queries} queries)", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncols=min(len(labels), 4), fontsize=8, frameon=False)
        if title:
            fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.07 * math.ceil(len(labels) / 4), 1, 1))
        return png_bytes(fig)
