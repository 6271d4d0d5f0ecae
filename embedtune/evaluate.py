"""Evaluation of models (exact search), built indexes and BM25 on BEIR-layout splits.

Every system ranks through :mod:`embedtune.retrieval` (a model through the dense retriever's exact
search, an index through its own approximate search, BM25 through the lexical retriever) in one
loop, so evaluation scores the very search that mining and serving use. Metrics come from
:mod:`embedtune.metrics` (pytrec_eval, as BEIR and MTEB report), the same code training's dev
evaluation scores with. Warnings go through ``warnings.warn`` (:class:`EmbedtuneWarning`) and are
kept in each result for its JSON.

With ``significance`` every system after the first is compared with the first, metric by metric,
by a paired randomisation test over the per-query scores (:func:`embedtune.metrics.paired_p_values`);
the p-values go into each result's JSON and mark the table. :func:`write_run_files` writes the
rankings that were scored as TREC run files, so trec_eval or ranx users can check or extend the numbers.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from embedtune.data import RetrievalSplit
from embedtune.encoding import EncodeSettings
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.index import DEFAULT_INDEXES_DIR, Index
from embedtune.io import write_text_atomic
from embedtune.metrics import (
    DEFAULT_KS,
    DEFAULT_METRICS,
    Run,
    compute_metrics,
    max_cutoff,
    metric_names,
    paired_p_values,
    trec_run_lines,
)
from embedtune.models import load_model, model_name, resolve_model_path
from embedtune.retrieval import BM25Retriever, DenseRetriever, RetrievalInput, Retriever, Searcher, SearchSettings
from embedtune.retrieval.bm25 import K1 as BM25_K1
from embedtune.retrieval.bm25 import B as BM25_B
from embedtune.retrieval.rerank import Reranker
from embedtune.settings import SettingError, setting, validate
from embedtune.splits import load_retrieval


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
    # p-value per metric against ``compared_with`` (the first system of the evaluation), when tested
    p_values: dict[str, float] | None = None
    compared_with: str | None = None
    # The ranking that was scored ({qid: {doc_id: score}}, own ids already dropped) and every query's
    # scores: for run files and significance tests, not part of the JSON.
    run: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    query_scores: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

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
        if self.p_values is not None:
            out["significance"] = {
                "compared_with": self.compared_with,
                "test": "paired randomisation",
                "p_values": {k: round(v, 6) for k, v in self.p_values.items()},
            }
        if self.per_query is not None:
            out["per_query"] = {q: {k: round(v, 6) for k, v in s.items()} for q, s in self.per_query.items()}
        return out


@dataclass(frozen=True)
class EvalSettings:
    """What every system of one evaluation is scored with; ``embedtune eval``'s options are these settings."""

    metrics: tuple[str, ...] = setting(
        DEFAULT_METRICS,
        help="Metrics: recall, precision, mrr, ndcg, map, hit_rate; a bare name is reported at each cut-off, "
        "name@k at k only.",
    )
    ks: tuple[int, ...] = setting(DEFAULT_KS, help="Cut-offs of the bare metric names.", min=1, flag="-k")
    ignore_own_id: bool = setting(
        False,
        help="Drop a document whose id is the query's id from its results (BEIR's rule for sets whose "
        "queries are also corpus documents, e.g. ArguAna, data/stsb-retrieval).",
    )
    per_query: bool = setting(False, help="Include every query's scores in the JSON output.")
    significance: bool = setting(
        False,
        help="Test every system against the first, per metric (paired randomisation test over the queries): "
        "p-values in the JSON, * (p < 0.05) and ** (p < 0.01) in the table.",
    )
    resamples: int = setting(
        10_000,
        help="Resamples of the significance test (exact when 2^queries is fewer): more give steadier p-values.",
        min=1,
    )
    show_progress: bool = setting(True, help="Show progress bars.", cli=False)

    def __post_init__(self) -> None:
        validate(self)
        if not self.ks:
            raise SettingError("ks", "give at least one cut-off")
        try:  # a bad metric fails now, not after minutes of encoding
            metric_names(self.metrics, self.ks)
        except EmbedtuneError as e:
            raise SettingError("metrics", str(e)) from e

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
            "to them; if that document is the query's own text (ArguAna-style sets), set ignore_own_id"
        ]
    return []


class _Ranker(NamedTuple):
    """A system made ready: its retriever, the document id of each corpus row, and what the JSON records."""

    retriever: Retriever
    doc_ids: Sequence[str]
    details: dict[str, object]


@dataclass(frozen=True)
class _System:
    """One system to evaluate; ``prepare`` makes its retriever when its turn comes (one model in memory)."""

    name: str
    kind: str  # "model", "index" or "bm25"
    prepare: Callable[[RetrievalInput], _Ranker]


def _model_system(model: str | Path | None, encoding: EncodeSettings, show_progress: bool) -> _System:
    def prepare(data: RetrievalInput) -> _Ranker:
        path = resolve_model_path(model)
        st = load_model(path, max_seq_length=encoding.max_seq_length)
        label = model_name(model)  # as the table names it
        retriever = DenseRetriever.encode(st, data, encoding, name=f"dense:{label}", show_progress=show_progress)
        details = {"model_path": str(path), "max_seq_length": int(st.max_seq_length), "precision": retriever.encoded_in}
        return _Ranker(retriever, data.doc_ids, details)

    return _System(str(model) if model is not None else "default", "model", prepare)


def _index_system(
    searcher: Searcher, split: RetrievalSplit, show_progress: bool, search: SearchSettings | None
) -> _System:
    """The index's own search (its :class:`Searcher`) in ``search``'s mode (default: the index's), named
    ``index:NAME:MODE`` (``index:NAME`` for the plain dense search of an index calibrated to nothing else)."""
    index, plan = searcher.index, searcher.plan(search)

    def prepare(data: RetrievalInput) -> _Ranker:
        indexed = set(index.doc_ids)
        missing = {d for docs in split.qrels.values() for d in docs if d not in indexed}
        if missing:
            example = ", ".join(sorted(missing)[:3])
            raise EmbedtuneError(
                f"index '{index.name}' lacks {len(missing)} document(s) that {split.name} marks relevant "
                f"(e.g. {example}); was it built from another corpus?"
            )
        retriever = searcher.retriever(data.query_texts, settings=search, show_progress=show_progress)
        details = {"model_path": index.manifest.model_path, "max_seq_length": index.manifest.max_seq_length}
        details |= {"mode": plan.mode, "reranked": plan.rerank is not None}
        return _Ranker(retriever, retriever.doc_ids, details)

    plain = search is None and plan.label == "dense"
    return _System(f"index:{index.name}" + ("" if plain else f":{plan.label}"), "index", prepare)


def _bm25_system(k1: float, b: float, show_progress: bool) -> _System:
    def prepare(data: RetrievalInput) -> _Ranker:
        retriever = BM25Retriever(data, k1=k1, b=b, matches_only=True, show_progress=show_progress)
        return _Ranker(retriever, data.doc_ids, {"k1": k1, "b": b})

    return _System("bm25", "bm25", prepare)


def _evaluate_systems(split: RetrievalSplit, systems: Sequence[_System], settings: EvalSettings) -> list[EvalResult]:
    """The one loop: each system ranks the split's queries through its retriever, pytrec_eval scores the run."""
    for message in own_id_warnings(split, settings.ignore_own_id):
        warnings.warn(message, EmbedtuneWarning, stacklevel=3)
    data = RetrievalInput.from_split(split)
    results = []
    for system in systems:
        started = time.perf_counter()
        ranker = system.prepare(data)
        scores, rows = ranker.retriever.search(np.arange(len(data.query_ids)), settings.depth)
        run = {
            qid: {ranker.doc_ids[r]: float(s) for s, r in zip(q_scores, q_rows, strict=True) if r >= 0}
            for qid, q_scores, q_rows in zip(data.query_ids, scores, rows, strict=True)
        }
        results.append(_score(system, split, run, len(ranker.doc_ids), settings, started, ranker.details))
    if settings.significance:
        add_significance(results, resamples=settings.resamples)
    return results


def add_significance(results: Sequence[EvalResult], *, resamples: int = 10_000, seed: int = 0) -> None:
    """Set ``p_values`` of every result after the first of its split: a paired randomisation test per
    metric against the first system, over every judged query."""
    first: dict[str, EvalResult] = {}
    for result in results:
        base = first.setdefault(result.split, result)
        if base is result:
            continue
        result.p_values = paired_p_values(
            base.query_scores, result.query_scores, result.metrics, resamples=resamples, seed=seed
        )
        result.compared_with = base.system


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip(".-") or "system"


def write_run_files(results: Sequence[EvalResult], directory: str | Path) -> list[Path]:
    """Write each result's ranking as a TREC run file (``qid Q0 docid rank score system``) into
    ``directory``, named ``<position>-<system>.<split>.run`` (``2-my-model.debian-test.run``, a model by
    its folder name); returns the paths. Scoring a file with trec_eval/pytrec_eval against the split's
    qrels gives the result's metrics (queries without results count 0 here, as with trec_eval ``-c``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for position, result in enumerate(results, start=1):
        name = Path(result.system).name if result.kind == "model" else result.system
        path = directory / f"{position}-{_safe(name)}.{_safe(result.split)}.run"
        write_text_atomic(path, "".join(trec_run_lines(result.run, result.system)))
        paths.append(path)
    return paths


def _score(
    system: _System,
    split: RetrievalSplit,
    run: Run,
    n_documents: int,
    settings: EvalSettings,
    started: float,
    details: dict[str, object],
) -> EvalResult:
    scores = compute_metrics(run, split.qrels, settings.metrics, settings.ks, ignore_own_id=settings.ignore_own_id)
    notes = own_id_warnings(split, settings.ignore_own_id)
    if scores.no_results:
        example = ", ".join(scores.no_results[:3])
        message = (
            f"{system.name}: no results for {len(scores.no_results)} of {len(split.qrels)} queries "
            f"(counted as 0; e.g. {example})"
        )
        warnings.warn(message, EmbedtuneWarning, stacklevel=4)
        notes.append(message)
    return EvalResult(
        system=system.name,
        kind=system.kind,
        split=split.name,
        n_queries=len(split.qrels),
        n_documents=n_documents,
        metrics=scores.mean,
        seconds=time.perf_counter() - started,
        details={**details, "ignore_own_id": settings.ignore_own_id},
        no_results=len(scores.no_results),
        warnings=notes,
        per_query=scores.per_query if settings.per_query else None,
        run={q: {d: s for d, s in docs.items() if not (settings.ignore_own_id and d == q)} for q, docs in run.items()},
        query_scores=scores.per_query,
    )


def evaluate_model(
    model: str | Path | None,
    split: RetrievalSplit,
    settings: EvalSettings = EvalSettings(),
    encoding: EncodeSettings | None = None,
) -> EvalResult:
    """Encode the whole corpus and the split's queries with ``model``; exact cosine search.

    The search is :class:`~embedtune.retrieval.DenseRetriever`'s (bf16 candidates rescored in fp32 where
    the encoder runs bf16, else fp32), so the scores are exact. With ``encoding.cache`` a corpus this
    model has encoded before, in this precision, is read back instead of re-encoded.
    """
    system = _model_system(model, encoding or EncodeSettings(), settings.show_progress)
    return _evaluate_systems(split, [system], settings)[0]


def evaluate_index(
    index: Index | Searcher,
    split: RetrievalSplit,
    settings: EvalSettings = EvalSettings(),
    search: SearchSettings | None = None,
) -> EvalResult:
    """Search the split's queries with the index's own search and model (no corpus re-encoding), in
    ``search``'s mode (default: the index's calibrated one), exactly as ``embedtune search`` would.

    Whatever the index loses to approximate search shows in its scores.
    """
    searcher = index if isinstance(index, Searcher) else Searcher(index)
    return _evaluate_systems(split, [_index_system(searcher, split, settings.show_progress, search)], settings)[0]


def evaluate_bm25(
    split: RetrievalSplit, settings: EvalSettings = EvalSettings(), *, k1: float = BM25_K1, b: float = BM25_B
) -> EvalResult:
    """BM25 over the split's corpus (see :mod:`embedtune.retrieval.bm25`), the lexical baseline."""
    return _evaluate_systems(split, [_bm25_system(k1, b, settings.show_progress)], settings)[0]


def evaluate(
    data: str | Path,
    split: str = "test",
    *,
    models: Sequence[str | Path] = (),
    indexes: Sequence[str | Path] = (),
    bm25: bool = False,
    indexes_dir: Path = DEFAULT_INDEXES_DIR,
    settings: EvalSettings = EvalSettings(),
    encoding: EncodeSettings | None = None,
    search: SearchSettings | None = None,
    modes: Sequence[str] = (),
) -> list[EvalResult]:
    """Evaluate BM25, models and indexes (in that order) on one split of ``data`` (a BEIR folder, or a pairs
    file: every pair judged, as ``split``), loading the data once.

    With ``search`` or ``modes``, each index is searched as :class:`SearchSettings` says, once per mode
    of ``modes`` (side by side), else in its default mode; a cross-encoder is loaded once for all.
    Without either, an index whose calibration chose another mode than dense is searched in that mode
    (``index:NAME:hybrid``), any other as it always was (``index:NAME``)."""
    if not models and not indexes and not bm25:
        raise EmbedtuneError("nothing to evaluate: give at least one model or index, or bm25")
    reranker = Reranker(search.rerank) if search is not None and search.rerank is not None else None
    searchers = [Searcher.open(name, indexes_dir=indexes_dir, reranker=reranker) for name in indexes]  # fail fast
    data_split = load_retrieval(Path(data), split)
    progress = settings.show_progress
    systems = [_bm25_system(BM25_K1, BM25_B, progress)] if bm25 else []
    systems += [_model_system(m, encoding or EncodeSettings(), progress) for m in models]
    by_mode = [replace(search or SearchSettings(), mode=m) for m in modes] or [search]
    systems += [_index_system(searcher, data_split, progress, given) for searcher in searchers for given in by_mode]
    return _evaluate_systems(data_split, systems, settings)


def _marked(value: float, p_value: float | None) -> str:
    """A metric cell: ``**`` when p < 0.01 against the first system, ``*`` when p < 0.05."""
    mark = "" if p_value is None else "**" if p_value < 0.01 else "*" if p_value < 0.05 else ""
    return f"{value:.4f}{mark}"


def format_table(results: Sequence[EvalResult]) -> str:
    """A markdown table, one row per system, metrics as columns; significance marks and a note when tested."""
    metric_names = list(results[0].metrics)
    header = ["system", *metric_names, "queries", "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        p = r.p_values or {}
        cells = [r.system, *(_marked(r.metrics[m], p.get(m)) for m in metric_names)]
        lines.append("| " + " | ".join([*cells, str(r.n_queries), f"{r.seconds:.0f}"]) + " |")
    tested = [r for r in results if r.p_values is not None]
    if tested:
        lines += [
            "",
            f"\\* p < 0.05, \\*\\* p < 0.01 against {tested[0].compared_with} (two-sided paired randomisation "
            "test over queries, per metric; not corrected for multiple comparisons).",
        ]
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
