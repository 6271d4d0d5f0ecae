"""Hard-negative mining: (query, positive) pairs in, (query, positive, negative_1..n, scores) rows out.

Three failure modes of the usual recipes are designed out here:

* **Memory.** Queries are retrieved a block at a time (a bf16 matrix product and top-k for
  embedders, a sparse product for BM25), so no query x corpus score matrix exists; memory is the
  corpus vectors plus ``chunk_size x max_rank`` candidates, whatever the number of queries.
* **False negatives.** A candidate is never a known positive of its query (any of them, with several
  positives), nor a document whose normalised text equals a positive's; the positive-aware filters
  (absolute margin, relative margin = NV-Retriever's TopK-PercPos, maximum score) drop candidates
  that score too close to the row's own positive, which is what most unlabelled positives do.
* **Self-duplicates.** Two copies of one text are never both negatives of a row.

Candidates are the documents at ranks ``min_rank..max_rank`` (1-based, in the retriever's ranking
of the whole corpus, positives included). Rules are applied in :data:`FILTER_RULES` order and each
removed candidate is counted under the first rule that removes it. A row for which fewer than
``num_negatives`` candidates survive is dropped (training needs the same number of columns in
every row), counted, and reported; if most rows would be dropped, mining stops with an error.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from embedtune.data import find_data_file, load_corpus, load_qrels, load_queries, qrels_path
from embedtune.encoding import CacheOption
from embedtune.errors import EmbedtuneError
from embedtune.io import atomic_file, check_destination, write_text_atomic

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedtune.index import Index
    from embedtune.train import TrainConfig

FILTER_RULES = ("known_positive", "positive_duplicate", "max_score", "absolute_margin", "relative_margin")
REPEATED_TEXT = "repeated_text"  # a second copy of a text already taken earlier in the same row
SAMPLINGS = ("top", "random")
RETRIEVERS = ("dense", "bm25")
_BM25_CELLS = 1 << 24  # scores held at once while ranking a chunk with BM25 (64 MiB of float32)
_SEARCH_CELLS = 1 << 26  # dense scores held at once (128 MiB in bf16)
_RESCORE_CELLS = 1 << 22  # gathered vector values held at once while rescoring in fp32 (16 MiB)
RESCORE_EXTRA = 16  # candidates fetched beyond max_rank by a bf16 search, then rescored in fp32


def normalise_text(text: str) -> str:
    """Case- and whitespace-insensitive form used to spot copies of a positive."""
    return " ".join(text.casefold().split())


@dataclass
class MiningConfig:
    """How negatives are chosen. Defaults follow NV-Retriever's best setting (TopK-PercPos 95%).

    ``relative_margin=0.05`` drops candidates scoring above ``pos - 0.05 * |pos|`` (95 % of a positive
    score); ``absolute_margin=m`` drops those above ``pos - m``; ``max_score`` drops those above it.
    ``None`` switches a rule off. ``chunk_size`` queries are retrieved at a time.
    """

    num_negatives: int = 5
    min_rank: int = 1
    max_rank: int = 50
    sampling: str = "top"
    relative_margin: float | None = 0.05
    absolute_margin: float | None = None
    max_score: float | None = None
    seed: int = 42
    chunk_size: int = 2048

    def validate(self) -> None:
        if self.num_negatives < 1:
            raise EmbedtuneError(f"num_negatives must be at least 1, got {self.num_negatives}")
        if self.min_rank < 1:
            raise EmbedtuneError(f"min_rank must be at least 1 (ranks start at 1), got {self.min_rank}")
        if self.min_rank > self.max_rank:
            raise EmbedtuneError(f"rank window is empty: min_rank {self.min_rank} > max_rank {self.max_rank}")
        if self.max_rank - self.min_rank + 1 < self.num_negatives:
            raise EmbedtuneError(
                f"rank window {self.min_rank}..{self.max_rank} holds {self.max_rank - self.min_rank + 1} candidates, "
                f"fewer than the {self.num_negatives} negatives asked for"
            )
        if self.sampling not in SAMPLINGS:
            raise EmbedtuneError(f"unknown sampling '{self.sampling}' (choose from {', '.join(SAMPLINGS)})")
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise EmbedtuneError(f"relative_margin must be in [0, 1), got {self.relative_margin}")
        if self.chunk_size < 1:
            raise EmbedtuneError(f"chunk_size must be positive, got {self.chunk_size}")


@dataclass
class MiningInput:
    """A corpus, queries, and the (query, positive) pairs to mine for, all by position.

    ``pair_query[r]``/``pair_doc[r]`` are the query and corpus rows of pair ``r``. Every pair of a
    query counts as a known positive of that query.
    """

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    pair_query: np.ndarray
    pair_doc: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pair_query = np.asarray(self.pair_query, dtype=np.int64)
        self.pair_doc = np.asarray(self.pair_doc, dtype=np.int64)
        if len(self.pair_query) == 0:
            raise EmbedtuneError("nothing to mine: no (query, positive) pairs")


def _judged_query_ids(path: Path) -> set[str]:
    """Query ids named in a qrels file, relevant or not (to count queries left without a positive)."""
    with path.open(encoding="utf-8") as f:
        next(f, None)
        return {line.split("\t", 1)[0].strip() for line in f if line.strip()}


def load_mining_input(root: Path, split: str = "train") -> MiningInput:
    """Pairs of a BEIR split (every relevant document a positive) with the whole corpus as candidates.

    Qrels that point at documents missing from the corpus, and queries judged with no relevant
    document, are counted and reported; if they are most of the split, it is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise EmbedtuneError(f"{root}: no such dataset folder")
    corpus = load_corpus(find_data_file(root, "corpus.jsonl"))
    queries = load_queries(find_data_file(root, "queries.jsonl"))
    path = qrels_path(root, split)
    qrels = load_qrels(path, query_ids=queries)
    doc_row = {doc_id: i for i, doc_id in enumerate(corpus)}
    query_ids = list(qrels)
    pairs = [(qi, d) for qi, q in enumerate(query_ids) for d in qrels[q]]
    missing = [(qi, d) for qi, d in pairs if d not in doc_row]
    warnings = []
    if missing:
        message = (
            f"{path}: {len(missing)} of {len(pairs)} (query, positive) pairs name documents missing from the "
            f"corpus (e.g. '{missing[0][1]}')"
        )
        if 2 * len(missing) > len(pairs):
            raise EmbedtuneError(message + "; is this the corpus the qrels were made for?")
        warnings.append(message + "; those pairs are skipped")
    no_positive = len(_judged_query_ids(path) - set(qrels))
    if no_positive:
        warnings.append(f"{path}: {no_positive} queries have no relevant document (score > 0) and are skipped")
    kept = [(qi, doc_row[d]) for qi, d in pairs if d in doc_row]
    return MiningInput(
        doc_ids=list(corpus),
        doc_texts=list(corpus.values()),
        query_ids=query_ids,
        query_texts=[queries[q] for q in query_ids],
        pair_query=np.array([qi for qi, _ in kept]),
        pair_doc=np.array([d for _, d in kept]),
        warnings=warnings,
    )


class Retriever(Protocol):
    """What the miner needs from a retriever: top-k of the corpus for chunks of queries, and pair scores."""

    name: str

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, doc_rows)``, each ``(len(query_rows), k)``, best first."""
        ...

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray: ...


class DenseRetriever:
    """Exact top-k by inner product over normalised vectors (= cosine), a block of queries at a time.

    Candidates are found by one matrix product per block (bf16 on AMX / bf16 GPUs, measured 6x faster
    than FAISS's fp32 brute force on this project's 2-core CPU), over-fetching ``RESCORE_EXTRA``
    candidates; those are then rescored in fp32 and re-sorted, so the returned scores (used by the
    margins and written for distillation) are exact and only a document whose bf16 score error
    exceeds the gap to the k-th candidate can be missed. A block's scores are at most ``_SEARCH_CELLS``
    values, so memory is the vectors plus a few hundred MB, whatever the corpus size.
    """

    def __init__(
        self, doc_vectors: np.ndarray, query_vectors: np.ndarray, name: str = "dense", precision: str = "auto"
    ) -> None:
        import torch

        from embedtune.encoding import cpu_has_amx_bf16

        self.doc_vectors = np.ascontiguousarray(doc_vectors, dtype=np.float32)
        self.query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        self.name = name
        # The search runs on the CPU: bf16 where asked for or where auto means it, fp32 for the rest.
        bf16 = precision == "bf16" or (precision == "auto" and cpu_has_amx_bf16())
        self.precision = "bf16" if bf16 else "fp32"
        self._dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self._search_docs = torch.from_numpy(self.doc_vectors).to(self._dtype)  # no copy when fp32

    @classmethod
    def encode(
        cls,
        model: str | Path | SentenceTransformer | None,
        data: MiningInput,
        *,
        batch_size: int = 32,
        precision: str = "auto",
        max_seq_length: int | None = None,
        name: str | None = None,
        show_progress: bool = True,
        cache: CacheOption = True,
    ) -> DenseRetriever:
        """Encode the corpus and the queries with ``model`` (a path, ``"default"`` or a loaded model).

        ``cache`` (see :class:`~embedtune.encoding.Encoder`) spares re-encoding the corpus on the next run.
        """
        from embedtune.encoding import Encoder, prompt_names
        from embedtune.models import load_model, resolve_model_path

        if model is None or isinstance(model, (str, Path)):
            name = name or f"dense:{model or 'default'}"
            model = load_model(resolve_model_path(model), max_seq_length=max_seq_length)
        else:
            name = name or "dense:model"
            if max_seq_length is not None:
                model.max_seq_length = max_seq_length
        encoder = Encoder(model, precision, cache=cache)
        query_prompt, document_prompt = prompt_names(model)
        docs = encoder.encode(
            data.doc_texts, prompt_name=document_prompt, batch_size=batch_size, show_progress=show_progress
        )
        queries = encoder.encode(
            data.query_texts, prompt_name=query_prompt, batch_size=batch_size, show_progress=show_progress
        )
        return cls(docs, queries, name, encoder.precision)

    @classmethod
    def from_index(cls, index: Index, data: MiningInput, *, show_progress: bool = True) -> DenseRetriever:
        """Mine with a built embedtune index: its stored vectors, and its own model for the queries.

        Saves re-encoding the corpus; the index must hold exactly the mining corpus, in its order.
        """
        from embedtune.index import Searcher

        if index.doc_ids != data.doc_ids:
            raise EmbedtuneError(
                f"index '{index.name}' holds {len(index)} documents, not the {len(data.doc_ids)} of the mining "
                "corpus in the same order; build it from this corpus, or mine with --model"
            )
        try:
            docs = index.faiss_index.reconstruct_n(0, index.faiss_index.ntotal)
        except RuntimeError:
            raise EmbedtuneError(
                f"index '{index.name}' cannot return its vectors (its FAISS type compresses them); mine with --model"
            ) from None
        encoder = Searcher(index).encoder
        queries = encoder.encode(
            data.query_texts, prompt_name=index.manifest.query_prompt_name, show_progress=show_progress
        )
        return cls(docs, queries, f"dense:index:{index.name}", encoder.precision)

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        n_docs, dim = self.doc_vectors.shape
        fetch = min(n_docs, k + (RESCORE_EXTRA if self.precision == "bf16" else 0))
        queries = torch.from_numpy(self.query_vectors[query_rows]).to(self._dtype)
        step = max(1, _SEARCH_CELLS // n_docs)
        with torch.inference_mode():
            found = [
                torch.topk(queries[s : s + step] @ self._search_docs.T, fetch, dim=1).indices
                for s in range(0, len(queries), step)
            ]
        rows = torch.cat(found).numpy()
        scores = np.empty(rows.shape, dtype=np.float32)
        step = max(1, _RESCORE_CELLS // (fetch * dim))
        for s in range(0, len(rows), step):
            block = self.query_vectors[query_rows[s : s + step]]
            scores[s : s + step] = np.einsum("qd,qkd->qk", block, self.doc_vectors[rows[s : s + step]])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.query_vectors[query_rows], self.doc_vectors[doc_rows])


class BM25Retriever:
    """BM25 (bm25s, Lucene variant) over the mining corpus; scores are raw BM25, not cosines."""

    name = "bm25"

    def __init__(self, data: MiningInput, *, show_progress: bool = True) -> None:
        from embedtune.bm25 import BM25

        self.bm25 = BM25({str(i): text for i, text in enumerate(data.doc_texts)}, show_progress=show_progress)
        self.query_terms = self.bm25.query_terms(data.query_texts)

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        step = max(1, _BM25_CELLS // len(self.bm25))
        scores, rows = [], []
        for start in range(0, len(query_rows), step):
            full = self.bm25.score_matrix(self.query_terms[query_rows[start : start + step]])
            top = np.argpartition(-full, k - 1, axis=1)[:, :k] if k < full.shape[1] else np.argsort(-full, axis=1)
            top_scores = np.take_along_axis(full, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            scores.append(np.take_along_axis(top_scores, order, axis=1))
            rows.append(np.take_along_axis(top, order, axis=1))
        return np.concatenate(scores), np.concatenate(rows)

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        return self.bm25.pair_scores(self.query_terms[query_rows], doc_rows)


@dataclass
class MiningReport:
    """What happened to every candidate, for the user to judge the mined data before training on it.

    ``candidates_seen`` counts (row, candidate) slots in the rank window; ``filtered`` counts each
    removed candidate once, under the first rule that removed it; ``rows_short`` rows had fewer than
    ``num_negatives`` survivors and were dropped (``available`` = how many rows had 0, 1, ... survivors,
    capped at ``num_negatives``).
    """

    retriever: str
    config: dict
    documents: int
    queries: int
    pairs: int
    window: list[int]
    candidates_seen: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    negatives_written: int = 0
    rows_written: int = 0
    rows_short: int = 0
    available: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    histograms: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for the console."""
        filtered = ", ".join(f"{rule} {n}" for rule, n in self.filtered.items())
        lines = [
            f"mined {self.rows_written} of {self.pairs} (query, positive) rows with {self.config['num_negatives']} "
            f"negatives each ({self.retriever}, ranks {self.window[0]}..{self.window[1]} "
            f"of {self.documents} documents)",
            f"candidates seen {self.candidates_seen}; removed: {filtered}",
            f"rows with fewer than {self.config['num_negatives']} negatives (dropped): {self.rows_short}",
        ]
        return "\n".join(lines)


@dataclass
class MinedRows:
    """Mined rows by position: pair index, negative corpus rows and scores (positive first)."""

    pairs: np.ndarray  # (rows,) index into MiningInput pairs
    negatives: np.ndarray  # (rows, n) corpus rows
    scores: np.ndarray  # (rows, n + 1): the positive's score, then each negative's


def _canonical_rows(texts: Sequence[str]) -> np.ndarray:
    """For each document, the first row whose normalised text equals its own."""
    first: dict[str, int] = {}
    return np.fromiter((first.setdefault(normalise_text(t), i) for i, t in enumerate(texts)), np.int64, len(texts))


def mine(
    data: MiningInput, retriever: Retriever, config: MiningConfig, *, show_progress: bool = True
) -> tuple[MinedRows, MiningReport]:
    """Select negatives for every pair of ``data``; see the module docstring for the rules."""
    from tqdm.auto import tqdm

    config.validate()
    started = time.perf_counter()
    n_docs = len(data.doc_ids)
    n = config.num_negatives
    if config.min_rank > n_docs:
        raise EmbedtuneError(f"min_rank {config.min_rank} is beyond the corpus of {n_docs} documents")
    k = min(config.max_rank, n_docs)
    report = MiningReport(
        retriever=retriever.name,
        config=asdict(config),
        documents=n_docs,
        queries=len(data.query_ids),
        pairs=len(data.pair_query),
        window=[config.min_rank, k],
        filtered=dict.fromkeys((*FILTER_RULES, REPEATED_TEXT), 0),
        warnings=list(data.warnings),
    )
    if k < config.max_rank:
        report.warnings.append(
            f"max_rank {config.max_rank} exceeds the corpus ({n_docs} documents): the window of all "
            f"{len(data.query_ids)} queries is cut to ranks {config.min_rank}..{k}"
        )
        if k - config.min_rank + 1 < n:
            raise EmbedtuneError(
                f"the corpus has {n_docs} documents: ranks {config.min_rank}..{k} cannot hold {n} negatives"
            )

    canon = _canonical_rows(data.doc_texts)
    pos_keys = np.unique(data.pair_query * n_docs + data.pair_doc)
    pos_canon_keys = np.unique(data.pair_query * n_docs + canon[data.pair_doc])
    order = np.argsort(data.pair_query, kind="stable")  # rows grouped by query, for chunked retrieval
    sorted_queries = data.pair_query[order]
    query_rows = np.unique(sorted_queries)
    rng = np.random.default_rng(config.seed)
    kept_pairs, kept_negs, kept_scores = [], [], []
    removed_scores: dict[str, list[np.ndarray]] = {rule: [] for rule in report.filtered}
    positive_scores, available = [], np.zeros(n + 1, dtype=np.int64)

    progress = tqdm(total=len(query_rows), desc="Mining", unit="query", disable=not show_progress)
    for start in range(0, len(query_rows), config.chunk_size):
        chunk = query_rows[start : start + config.chunk_size]
        top_scores, top_rows = retriever.search(chunk, k)
        lo, hi = np.searchsorted(sorted_queries, [chunk[0], chunk[-1] + 1])
        rows = order[lo:hi]
        q = data.pair_query[rows]
        at = np.searchsorted(chunk, q)  # each row's line in the chunk's results
        cand = top_rows[at, config.min_rank - 1 :]
        score = top_scores[at, config.min_rank - 1 :]
        pos = retriever.pair_scores(q, data.pair_doc[rows]).astype(np.float32)
        positive_scores.append(pos)
        report.candidates_seen += cand.size

        base = q[:, None] * n_docs
        rules = {
            "known_positive": np.isin(base + cand, pos_keys),
            "positive_duplicate": np.isin(base + canon[cand], pos_canon_keys),
            "max_score": score > config.max_score if config.max_score is not None else None,
            "absolute_margin": (
                score > (pos - config.absolute_margin)[:, None] if config.absolute_margin is not None else None
            ),
            "relative_margin": (
                score > (pos - np.abs(pos) * config.relative_margin)[:, None]
                if config.relative_margin is not None
                else None
            ),
        }
        removed = cand < 0  # a retriever may pad with -1 (as FAISS does) when it finds fewer than k
        for rule, mask in rules.items():
            if mask is None:
                continue
            new = mask & ~removed
            report.filtered[rule] += int(new.sum())
            removed_scores[rule].append(score[new])
            removed |= mask

        # Order the window (by rank, or at random), then drop later copies of a text already seen.
        if config.sampling == "random":
            rank_order = np.argsort(rng.random(cand.shape), axis=1)
        else:
            rank_order = np.broadcast_to(np.arange(cand.shape[1]), cand.shape)
        cand_o = np.take_along_axis(cand, rank_order, axis=1)
        score_o = np.take_along_axis(score, rank_order, axis=1)
        alive = ~np.take_along_axis(removed, rank_order, axis=1)
        flat = np.flatnonzero(alive)
        text_keys = (flat // cand.shape[1]) * n_docs + canon[cand_o.ravel()[flat]]
        _, first = np.unique(text_keys, return_index=True)
        repeated = np.ones(len(flat), dtype=bool)
        repeated[first] = False
        alive.ravel()[flat[repeated]] = False
        report.filtered[REPEATED_TEXT] += int(repeated.sum())
        removed_scores[REPEATED_TEXT].append(score_o.ravel()[flat[repeated]])

        taken = alive & (np.cumsum(alive, axis=1) <= n)
        counts = taken.sum(axis=1)
        available += np.bincount(counts, minlength=n + 1)
        full = counts == n
        pick = np.argsort(~taken[full], axis=1, kind="stable")[:, :n]  # the n taken slots, in order
        kept_pairs.append(rows[full])
        kept_negs.append(np.take_along_axis(cand_o[full], pick, axis=1))
        neg_scores = np.take_along_axis(score_o[full], pick, axis=1)
        kept_scores.append(np.concatenate([pos[full, None], neg_scores], axis=1))
        progress.update(len(chunk))
    progress.close()

    mined = MinedRows(np.concatenate(kept_pairs), np.concatenate(kept_negs), np.concatenate(kept_scores))
    report.rows_written = len(mined.pairs)
    report.negatives_written = int(mined.negatives.size)
    report.rows_short = report.pairs - report.rows_written
    report.available = available.tolist()
    report.seconds["mine"] = round(time.perf_counter() - started, 2)
    removed_all = {rule: np.concatenate(parts) for rule, parts in removed_scores.items() if parts}
    report.histograms = _histograms(np.concatenate(positive_scores), mined.scores[:, 1:].ravel(), removed_all)
    if report.rows_short:
        share = report.rows_short / report.pairs
        message = (
            f"{report.rows_short} of {report.pairs} rows ({share:.1%}) have fewer than {n} negatives after the "
            f"filters (survivors per row: {report.available}) and are left out"
        )
        if 2 * report.rows_short > report.pairs:
            raise EmbedtuneError(
                message + "; that is most of the data: widen the rank window, ask for fewer negatives or loosen "
                "the margins"
            )
        report.warnings.append(message)
    return mined, report


def _histograms(positives: np.ndarray, negatives: np.ndarray, removed: dict[str, np.ndarray], bins: int = 50) -> dict:
    """Counts over shared bin edges, so the report's plot and JSON show the same numbers."""
    groups = {"positive": positives, "negative": negatives, **{f"removed:{k}": v for k, v in removed.items() if v.size}}
    values = np.concatenate([v for v in groups.values() if v.size])
    edges = np.histogram_bin_edges(values, bins=bins)
    return {
        "edges": [round(float(e), 6) for e in edges],
        "counts": {name: np.histogram(v, bins=edges)[0].tolist() for name, v in groups.items()},
    }


def _open_output(path: Path, *, gzipped: bool):
    # Level 6 (zlib's default) writes about three times faster than gzip.open's 9, for a few % more bytes.
    return gzip.open(path, "wt", encoding="utf-8", compresslevel=6) if gzipped else path.open("w", encoding="utf-8")


def write_mined(path: Path, data: MiningInput, mined: MinedRows) -> Path:
    """Write rows as jsonl (gzip if ``path`` ends in .gz), atomically; ``embedtune train`` reads it as is."""
    path = Path(path)
    with atomic_file(path) as tmp, _open_output(tmp, gzipped=path.suffix == ".gz") as f:
        for pair, negs, scores in zip(mined.pairs, mined.negatives, mined.scores, strict=True):
            q, d = data.pair_query[pair], data.pair_doc[pair]
            row = {"query": data.query_texts[q], "positive": data.doc_texts[d]}
            row.update({f"negative_{i}": data.doc_texts[r] for i, r in enumerate(negs, start=1)})
            row["scores"] = [round(float(s), 6) for s in scores]
            row.update(
                query_id=data.query_ids[q], positive_id=data.doc_ids[d], negative_ids=[data.doc_ids[r] for r in negs]
            )
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def report_paths(output: Path) -> tuple[Path, Path]:
    """``mined.jsonl.gz`` -> ``mined.report.json`` and ``mined.report.png`` beside it."""
    output = Path(output)
    stem = output.name.removesuffix(".gz").removesuffix(".jsonl")
    return output.with_name(f"{stem}.report.json"), output.with_name(f"{stem}.report.png")


def plot_histograms(report: MiningReport, path: Path) -> Path:
    """Score histograms (positives, chosen negatives, removed candidates by rule) as a PNG."""
    from embedtune.plots import figure, save_png

    edges = np.array(report.histograms["edges"])
    with figure(figsize=(8, 4.5), dpi=110) as (fig, ax):
        for name, counts in report.histograms["counts"].items():
            style = {"linestyle": "--", "linewidth": 2.5} if name == "positive" else {"linewidth": 1.5}
            ax.stairs(counts, edges, label=f"{name} ({sum(counts)})", **style)
        ax.set_yscale("symlog")
        ax.set_xlabel(f"{report.retriever} score")
        ax.set_ylabel("count")
        low, high = report.window
        ax.set_title(f"mining: {report.rows_written} of {report.pairs} rows kept, ranks {low}..{high}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return save_png(fig, path)


def mine_to_file(
    data: Path,
    output: Path,
    *,
    split: str = "train",
    retriever: str = "dense",
    model: str | Path | SentenceTransformer | None = None,
    config: MiningConfig | None = None,
    batch_size: int = 32,
    precision: str = "auto",
    max_seq_length: int | None = None,
    model_name: str | None = None,
    index: str | Path | None = None,
    indexes_dir: Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    cache: CacheOption = True,
) -> MiningReport:
    """Mine a BEIR split into ``output`` (jsonl[.gz]) plus ``<stem>.report.json`` and ``<stem>.report.png``.

    ``retriever`` is ``dense`` (``model`` encodes corpus and queries; the default model if ``None``)
    or ``bm25``. ``model_name`` names a loaded ``model`` in the report. ``index`` (a name under
    ``indexes_dir``, or a path) mines with a built index's vectors instead of encoding the corpus.
    ``cache`` is the encoding cache of the dense retriever (see :class:`~embedtune.encoding.Encoder`).
    """
    config = config or MiningConfig()
    config.validate()
    output = Path(output)
    if not output.name.endswith((".jsonl", ".jsonl.gz")):
        raise EmbedtuneError(f"{output}: the mined file must end in .jsonl or .jsonl.gz")
    check_destination(output, overwrite)
    if retriever not in RETRIEVERS:
        raise EmbedtuneError(f"unknown retriever '{retriever}' (choose from {', '.join(RETRIEVERS)})")
    inputs = load_mining_input(Path(data), split)
    started = time.perf_counter()
    if retriever == "bm25":
        searcher: Retriever = BM25Retriever(inputs, show_progress=show_progress)
    elif index is not None:
        from embedtune.index import DEFAULT_INDEXES_DIR, Index

        loaded = Index.load(index, indexes_dir or DEFAULT_INDEXES_DIR)
        searcher = DenseRetriever.from_index(loaded, inputs, show_progress=show_progress)
    else:
        searcher = DenseRetriever.encode(
            model,
            inputs,
            batch_size=batch_size,
            precision=precision,
            max_seq_length=max_seq_length,
            name=f"dense:{model_name}" if model_name else None,
            show_progress=show_progress,
            cache=cache,
        )
    prepare_seconds = round(time.perf_counter() - started, 2)
    mined, report = mine(inputs, searcher, config, show_progress=show_progress)
    report.seconds["prepare"] = prepare_seconds
    started = time.perf_counter()
    write_mined(output, inputs, mined)
    report.seconds["write"] = round(time.perf_counter() - started, 2)
    json_path, png_path = report_paths(output)
    write_text_atomic(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
    plot_histograms(report, png_path)
    return report


def mined_path(output: Path) -> Path:
    """Where ``train --mine`` keeps the mined rows: beside the model directory, not inside it."""
    output = Path(output)
    return output.with_name(output.name + ".mined.jsonl.gz")


def mine_for_training(
    config: TrainConfig, selection: MiningConfig | None = None, *, retriever: str = "dense"
) -> tuple[TrainConfig, MiningReport]:
    """Mine negatives for ``config``'s BEIR data with its base model; return the config that trains on them.

    The model about to be fine-tuned is the dense retriever (same token limit, same precision, the
    same pooling for a plain checkpoint), so negatives are hard for the model that will learn from
    them. Rows go to :func:`mined_path` with their report; the returned config reads them instead
    of the pairs (n-tuple MNRL by default, or ``loss="margin-mse"`` on the kept scores).
    """
    from embedtune.models import load_model
    from embedtune.training_data import is_beir_folder

    if not is_beir_folder(config.data):
        raise EmbedtuneError(f"{config.data}: mining needs a BEIR folder (corpus, queries, qrels) to search")
    if config.resume:
        raise EmbedtuneError("--mine cannot be combined with --resume: resume training on the mined file instead")
    model = None
    if retriever == "dense":
        model = load_model(
            config.model, max_seq_length=config.max_seq_length, pooling=config.pooling, normalize=config.normalize
        )
    report = mine_to_file(
        config.data,
        mined_path(config.output),
        split=config.split,
        retriever=retriever,
        model=model,
        config=selection,
        precision=config.precision,
        model_name=str(config.model),
        overwrite=config.overwrite,
        show_progress=config.show_progress,
    )
    return dataclasses.replace(config, data=mined_path(config.output)), report
