"""Calibration of an index's search knob: recall against exact search, by score, on query-like probes.

:func:`calibrate` picks the ``nprobe`` (IVF) or ``ef_search`` (HNSW) that a build stores as the
index's search default: the smallest value, plus a step of margin, whose recall@10 against exact
search reaches the target on *probes*, query vectors made as real queries are made. Corpus vectors
as queries overstate the recall that real queries get (each sits right on its own document, and in
HNSW its own node links straight to its neighbours), so a knob that reached the target on them left
an index short of exact search on real queries. :func:`probe_texts` picks the probe texts: the
judged queries of the corpus folder's dev (else train) split where it has enough of them, else
titles or first sentences of a seeded sample of documents; the build encodes them with its encoder
and the model's query prompt (:func:`embedtune.index.build.query_probes`). Corpus vectors remain the
fallback only where no probe can be encoded (a merge whose model is not at hand), and the manifest
records which probes were used, so ``index info`` says how far to trust the recall it shows.

Recall is counted by score, not by id (:func:`recall_at_k`), so tied duplicate documents are not
misses, and found documents are scored with their float vectors (:func:`embedtune.ranking.row_scores`),
not with the index's own (quantised) scores, so quantised types are judged like exact ones. The exact
search is :class:`embedtune.ranking.ExactTopK` (fp32), the one that retrieval and dev rank with too.
``benchmarks/index_types.py`` re-measures recall on held-out queries
(``benchmarks/results/index_types.md``). :func:`calibrate_queries` and :class:`QueryRecall` do the
same with real query vectors (``index calibrate``: :mod:`embedtune.retrieval.calibration`), against
the vectors the index stores for its live documents, so removed (tombstoned) documents never count.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedtune.data import load_qrels, load_queries, qrels_path
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.index.store import DocStore
from embedtune.index.types import IndexSpec, knob_name, knob_steps, search_parameters
from embedtune.ranking import ExactTopK, row_scores

CALIBRATION_QUERIES = 500
# Scores this close to the exact k-th best count as ties (duplicate documents); rare between distinct
# documents, as the synthetic benchmark corpus shows (benchmarks/results/index_types.md).
RECALL_EPSILON = 1e-5
# Judged queries probe only splits that tune (never test), and only where there are enough of them
# to measure a recall of 0.99 on: fewer leave the documents' up to 500 probes the better sample.
PROBE_SPLITS = ("dev", "train")
MIN_JUDGED_PROBES = 50
PROBE_WORDS = 32  # a first sentence is cut to a long query's length
SENTENCE_MIN_WORDS = 3  # a sentence end before this many words is an abbreviation ("0 A.D. is ...")


def recall_at_k(found_scores: np.ndarray, kth_scores: np.ndarray, epsilon: float = RECALL_EPSILON) -> float:
    """Mean fraction of the ``k = found_scores.shape[1]`` results that score at least the exact k-th best.

    Recall by score, not by id (as ann-benchmarks computes it): corpora hold duplicate documents whose
    vectors tie, and any one of tied documents is as right as another. Counting ids made a sizeable
    share of the Debian test queries look like misses for returning a different copy of a tied document.
    """
    k = found_scores.shape[1]
    if k == 0:  # a one-document index: nothing to find besides the query itself
        return 1.0
    hits = (found_scores >= kth_scores[:, None] - epsilon).sum(axis=1)
    return float(np.minimum(hits, k).mean() / k)


@dataclass(frozen=True)
class Calibration:
    knobs: dict[str, int]
    recall_at_10: float
    queries: int
    target: float
    reached: bool
    probes: str  # what the queries were: "dev queries", "titles", "first sentences", "corpus vectors", ...


@dataclass(frozen=True)
class Probes:
    """The query vectors a build calibrates on, and what they were made from; ``vectors`` None: corpus
    vectors stand in (:data:`CORPUS_PROBES`)."""

    vectors: np.ndarray | None
    kind: str


CORPUS_PROBES = Probes(None, "corpus vectors")


def probe_texts(store: DocStore, fids: np.ndarray, folder: Path, seed: int = 0) -> tuple[list[str], str]:
    """Query-like texts to calibrate on, and what they are: :func:`judged_queries` of ``folder`` (the
    folder of the corpus file: a BEIR folder has them) where it has enough, else :func:`document_probes`
    of the documents ``fids`` in ``store``."""
    return judged_queries(folder, seed) or document_probes(store, fids, seed)


def judged_queries(folder: Path, seed: int = 0) -> tuple[list[str], str] | None:
    """Up to :data:`CALIBRATION_QUERIES` judged queries (a seeded sample) of ``folder``'s dev split, else
    of its train split; None where neither has :data:`MIN_JUDGED_PROBES`.

    A split whose files cannot be read is warned about, not raised: the build does not depend on it,
    and the documents still give probes.
    """
    for split in PROBE_SPLITS:
        qrels = qrels_path(folder, split)
        if not qrels.is_file():
            continue
        try:
            queries = load_queries(folder)
            texts = [queries[q] for q in load_qrels(qrels, query_ids=queries)]
        except EmbedtuneError as e:
            warnings.warn(
                f"{e}; the search knob is calibrated on document texts instead", EmbedtuneWarning, stacklevel=2
            )
            return None
        if len(texts) >= MIN_JUDGED_PROBES:
            return _sample(texts, seed), f"{split} queries"
    return None


def document_probes(store: DocStore, fids: np.ndarray, seed: int = 0) -> tuple[list[str], str]:
    """For a seeded sample of the documents ``fids``, the title, or the first sentence
    (:func:`first_sentence`) where a document has none or an earlier one of the sample has the same
    (a title shared by many documents names none of them); distinct texts only."""
    texts: dict[str, bool] = {}  # text -> is a title
    docs = store.lookup(_sample(fids, seed))
    for fid in sorted(docs):
        doc = docs[fid]
        title = doc.metadata.get("title")
        title = title.strip() if isinstance(title, str) else ""
        text = title if title and title not in texts else first_sentence(doc.text.removeprefix(title))
        if text:
            texts.setdefault(text, text == title)
    titles = sum(texts.values())
    kind = "titles" if titles == len(texts) else "first sentences" if not titles else "titles and first sentences"
    return list(texts), kind


def first_sentence(text: str) -> str:
    """``text``'s first sentence, of at least :data:`SENTENCE_MIN_WORDS` words and at most
    :data:`PROBE_WORDS`, whitespace collapsed (descriptions wrap their lines mid-sentence)."""
    words = text.split()[:PROBE_WORDS]
    ends = (i + 1 for i, w in enumerate(words) if i + 1 >= SENTENCE_MIN_WORDS and w.endswith((".", "!", "?")))
    return " ".join(words[: next(ends, len(words))])


def _sample(items: Sequence, seed: int) -> list:
    """Up to :data:`CALIBRATION_QUERIES` of ``items``, a seeded sample in their order."""
    rows = np.random.default_rng(seed).choice(len(items), size=min(CALIBRATION_QUERIES, len(items)), replace=False)
    return [items[i] for i in np.sort(rows)]


def calibrate(
    index,
    spec: IndexSpec,
    vectors: np.ndarray,
    ids: np.ndarray,
    target: float,
    probes: Probes = CORPUS_PROBES,
    seed: int = 0,
) -> Calibration:
    """The knob value one step above the smallest with recall@10 >= ``target`` against exact search over
    ``vectors`` (FAISS ids ``ids``), on ``probes`` as queries.

    With :data:`CORPUS_PROBES`, a seeded sample of the corpus vectors is the queries, each with its own
    document left out of both result lists, so the test is about finding its true neighbours.
    """
    n = len(vectors)
    if probes.vectors is None:
        own = np.sort(np.random.default_rng(seed).choice(n, size=min(CALIBRATION_QUERIES, n), replace=False))
        queries = np.ascontiguousarray(vectors[own])
    else:
        own, queries = None, np.ascontiguousarray(probes.vectors, dtype=np.float32)
    extra = 0 if own is None else 1  # a corpus vector's own document comes back too, and is left out
    k = min(10 + extra, n) - extra
    truth_scores, truth_rows = ExactTopK(vectors).search(queries, k + extra)  # memory-mapped: read in blocks
    if own is None:
        kth = truth_scores[:, k - 1]
    else:
        own_in_top = (truth_rows[:, :k] == own[:, None]).any(axis=1)
        kth = np.where(own_in_top, truth_scores[:, k], truth_scores[:, max(k - 1, 0)])
    name = knob_name(spec.kind)
    by_id = np.argsort(ids, kind="stable")  # FAISS ids -> rows of ``vectors``, sorted once for every knob

    def recall_with(value: int) -> float:
        params = search_parameters(spec.kind, {name: value} if name else {})
        found = index.search(queries, k + extra, params=params)[1]
        found = np.where(found >= 0, by_id[np.searchsorted(ids, found, sorter=by_id).clip(0, n - 1)], -1)
        if own is not None:
            found = _drop_self(found, own, k)
        return recall_at_k(row_scores(queries, vectors, found), kth)

    return _choose_knob(spec, recall_with, target, len(queries), probes.kind)


def _choose_knob(spec: IndexSpec, recall_with, target: float, queries: int, probes: str) -> Calibration:
    """One step above the smallest knob value whose recall reaches ``target`` (the best value if none does)."""
    name = knob_name(spec.kind)
    steps = knob_steps(spec) or [0]
    best, best_recall = steps[-1], -1.0
    for i, value in enumerate(steps):
        recall = recall_with(value)
        gain = recall - best_recall
        if gain > 1e-9:
            best, best_recall = value, recall
        if recall >= target:
            if i + 1 < len(steps):
                # One step more than the sample needs: probes are a sample, titles and first sentences only
                # resemble queries, and at the bare minimum held-out queries' nDCG@10 came too close to
                # falling more than 0.005 short of exact search's (benchmarks/results/index_probes.md).
                best = steps[i + 1]
                best_recall = max(best_recall, recall_with(best))
            break
        if spec.kind == "ivf-pq" and value >= 8 and gain < 0.002:
            break  # quantisation error, not the cells scanned, limits PQ's recall: scanning more buys nothing
    knobs = {name: best} if name else {}
    return Calibration(knobs, round(best_recall, 4), queries, target, best_recall >= target, probes)


class QueryRecall:
    """recall@``k`` of a loaded :class:`~embedtune.index.Index` for real query vectors, against exact search
    over its live documents' stored vectors (tombstones excluded on both sides), for any search knobs."""

    def __init__(self, index, queries: np.ndarray, k: int = 10) -> None:
        self.index, self.queries = index, queries
        self.fids = np.fromiter((f for f, _ in index.store.iter_ids()), dtype=np.int64)
        self.vectors = stored_vectors(index, self.fids)
        self.k = min(k, len(self.fids))
        self.kth = ExactTopK(self.vectors).search(queries, self.k)[0][:, self.k - 1]

    def __call__(self, knobs: dict[str, int]) -> float:
        found = self.index.search_vectors(self.queries, self.k, **knobs)[1]
        return recall_at_k(row_scores(self.queries, self.vectors, _rows_of(found, self.fids)), self.kth)


def calibrate_queries(index, queries: np.ndarray, target: float) -> Calibration:
    """The search knob calibrated, as :func:`calibrate` does, on real query vectors rather than corpus vectors."""
    spec = index.manifest.spec
    name = knob_name(spec.kind)
    recall = QueryRecall(index, queries)
    return _choose_knob(spec, lambda value: recall({name: value} if name else {}), target, len(queries), "queries")


def stored_vectors(index, fids: np.ndarray) -> np.ndarray:
    """The vectors the index stores for ``fids`` (decoded where its type compresses them)."""
    faiss_index = index.faiss_index
    try:
        if hasattr(faiss_index, "make_direct_map") and not faiss_index.direct_map.type:
            import faiss

            faiss_index.set_direct_map_type(faiss.DirectMap.Hashtable)  # IVF: reconstruct by id
        return np.stack([faiss_index.reconstruct(int(f)) for f in fids]).astype(np.float32, copy=False)
    except RuntimeError as e:
        raise EmbedtuneError(
            f"index '{index.name}' cannot return its vectors by id, so its search knob cannot be calibrated on queries"
        ) from e


def _rows_of(found: np.ndarray, fids: np.ndarray) -> np.ndarray:
    """FAISS ids -> rows of ``fids`` (sorted, as the store streams them); -1 stays -1."""
    rows = np.searchsorted(fids, found).clip(0, len(fids) - 1)
    return np.where((found >= 0) & (fids[rows] == found), rows, -1)


def _drop_self(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` results of each row of ``found`` other than that row's ``own`` entry."""
    out = np.full((len(found), k), -1, dtype=np.int64)
    for i, (row, mine) in enumerate(zip(found, own, strict=True)):
        kept = row[row != mine][:k]
        out[i, : len(kept)] = kept
    return out
