"""Dev-set evaluation during training: which evaluator, on which documents, at what cost.

The trainer keeps the checkpoint with the best dev metric, so the dev evaluation runs several times
per run, and a user on a CPU pays each one in minutes: by default all of them together (and the
baseline) cost at most :data:`DEV_COST_SHARE` of the run. A retrieval dev set is therefore small
and hard rather than large and random: sampled queries, and a corpus of their relevant documents
and the candidates BM25 and the base model rank highest for them
(:class:`RetrievalDevEvaluator`), sized from the run's own training cost
(:meth:`RetrievalDevEvaluator.fit`). Texts are encoded in the machine's fastest encoding precision
(``auto``: bf16 where the CPU or GPU has bf16 arithmetic), whatever precision training runs in.
A scored-pair dev set gets Spearman/Pearson correlation instead of ranking metrics.

The numbers are ``embedtune eval``'s: texts are encoded by the same :class:`~embedtune.encoding.Encoder`
(with the model's own prompts, and no cache, since the weights change between evaluations), ranked
by the one exact top-k (:class:`embedtune.ranking.ExactTopK`, in fp32), and scored by
:func:`embedtune.metrics.compute_metrics` (pytrec_eval) under eval's metric names (``hit_rate@k``,
not sentence-transformers' ``accuracy@k``). So the dev metrics on a model card are the ones
``embedtune eval`` reports for the same sample, not those of a second implementation with its own
tie-breaking, its own ``map@k`` or its own names. The dev set is a
:class:`~embedtune.data.RetrievalSplit`, as eval's is; a pairs file becomes one as ``embedtune eval``
reads it (:func:`embedtune.splits.pairs_split`).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
import warnings
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedtune.data import RetrievalSplit, load_split, qrels_path
from embedtune.encoding import Encoder, prompt_names
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.metrics import compute_metrics, max_cutoff
from embedtune.ranking import ExactTopK
from embedtune.settings import SettingError
from embedtune.splits import pairs_split
from embedtune.training.config import AUTO_DEV, DEV_NAME, NO_DEV, DevSettings, parse_metric
from embedtune.training_data import TrainingData, is_beir_folder, load_training_data

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.evaluation import BaseEvaluator

BATCH_SIZE = 64  # texts per encoding batch
DEV_COST_SHARE = 0.15  # at most this share of a default run goes to dev evaluation, the baseline included
POOL_DEPTH = 20  # BM25 candidates per dev query that the base model ranks when the dev corpus is chosen
POOL_EVALUATIONS = 2  # the baseline encodes a pool of about twice the dev corpus: two evaluations' cost
CANDIDATES_PER_QUERY = 4  # hard candidates per dev query when the run's cost does not size the set
MIN_DEV_QUERIES = 50  # fewer dev queries make a metric too coarse to pick a checkpoint


class DevEvaluator:
    """Scores a model on the dev set, encoding with :class:`~embedtune.encoding.Encoder` in eval mode.

    ``primary_metric`` is the key (without the trainer's ``eval_`` prefix) that picks the kept
    checkpoint; ``texts`` (how many texts one evaluation encodes) lets the trainer space evaluations
    by their cost. ``max_seq_length``, when set, is the token limit texts are encoded with: the one
    the saved model will search with, not the (maybe shorter) training length, so that the dev
    metric measures the model as it will be used. :func:`trainer_evaluator` hands it to the
    sentence-transformers trainer. ``seconds`` and ``calls`` add up what the evaluations cost, for the
    run's record of where its time went.
    """

    def __init__(self, precision: str, primary_metric: str, texts: int) -> None:
        self.precision = precision
        self.primary_metric = primary_metric
        self.texts = texts
        self.max_seq_length: int | None = None
        self.seconds, self.calls = 0.0, 0

    def __call__(self, model: SentenceTransformer) -> dict[str, float]:
        training, length = model.training, model.max_seq_length
        model.eval()  # no dropout while encoding; the trainer's own mode and length are restored after
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        started = time.perf_counter()
        try:
            return self.score(Encoder(model, self.precision, cache=None))
        finally:
            model.train(training)
            model.max_seq_length = length
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def fit(self, train_texts: int, evaluations: int) -> int:
        """Size the dev set for a run that trains on ``train_texts`` texts and evaluates ``evaluations``
        times; returns the evaluations that fit the cost (here: all of them, the set is fixed)."""
        return evaluations

    def prepare(self, model: SentenceTransformer) -> None:
        """Make ready with the base model what later evaluations need (a resumed run skips the baseline)."""

    def score(self, encoder: Encoder) -> dict[str, float]:
        raise NotImplementedError


class RetrievalDevEvaluator(DevEvaluator):
    """Ranking metrics of the dev queries over a small, hard dev corpus, keyed as ``dev_cosine_<metric>@<k>``.

    It is built over ``candidates``: the dev queries, their qrels, and every document they could be
    ranked against (a BEIR folder's whole corpus, or a pairs file's documents). Ranking each query
    against thousands of random documents costs most of a small run and says little, since random
    documents rarely reach a query's top 10. So the first model it sees (the base model, scored as
    the run's baseline) picks the dev corpus, in :meth:`prepare`: the queries' relevant documents,
    then, rank by rank, the documents BM25 ranks highest over all the candidates and those the base
    model ranks highest among BM25's top :data:`POOL_DEPTH`, until ``corpus_size`` documents. Those
    are the documents a fine-tuned model must learn to rank below the right one. The baseline's
    metrics come from the vectors :meth:`prepare` encoded, so the base model is not encoded twice.

    ``corpus_size`` None sizes the set from the run (:meth:`fit`); ``seed`` samples the queries.
    """

    def __init__(
        self,
        candidates: RetrievalSplit,
        family: str,
        k: int,
        precision: str,
        corpus_size: int | None = None,
        seed: int = 0,
    ) -> None:
        queries = len(candidates.queries)
        self.size = min(len(candidates.corpus), corpus_size or queries * (1 + CANDIDATES_PER_QUERY))
        super().__init__(precision, _ir_key(family, k), queries + self.size)
        self.candidates, self.corpus_size, self.seed = candidates, corpus_size, seed
        self.split: RetrievalSplit | None = None  # the queries kept and the dev corpus, once prepared
        self.baseline: dict[str, float] = {}
        ks = sorted({10, k})
        wanted = [
            *(("hit_rate", c) for c in sorted({1, *ks})),
            *((f, c) for f in ("precision", "recall", "mrr", "ndcg") for c in ks),
            *(("map", c) for c in sorted({100, k})),
        ]
        self.keys = {f"{f}@{c}": _ir_key(f, c) for f, c in wanted}  # eval's metric name -> trainer key

    def fit(self, train_texts: int, evaluations: int) -> int:
        """Size the dev set so that ``evaluations`` of it, and the baseline's candidate pool, cost at
        most :data:`DEV_COST_SHARE` of a run that encodes ``train_texts`` texts forward and backward;
        returns how many evaluations fit (fewer than asked when even the smallest useful dev set,
        :data:`MIN_DEV_QUERIES` queries with a positive and two candidates each, would cost more).

        A ``corpus_size`` given by the user is kept, and so are the evaluations asked for.
        """
        if self.corpus_size is not None:
            return evaluations
        allowed = train_texts * DEV_COST_SHARE / (1 - DEV_COST_SHARE)
        available = len(self.candidates.queries)
        smallest = 4 * min(available, MIN_DEV_QUERIES)  # a query, its positive and two candidates
        fitting = max(1, min(evaluations, int(allowed // smallest) - POOL_EVALUATIONS))
        per_evaluation = allowed / (fitting + POOL_EVALUATIONS)
        queries = min(available, max(MIN_DEV_QUERIES, int(per_evaluation // (2 + CANDIDATES_PER_QUERY))))
        documents = min(len(self.candidates.corpus), max(3 * queries, int(per_evaluation) - queries))
        if queries < available:
            kept = sorted(random.Random(self.seed).sample(sorted(self.candidates.queries), queries))
            sample = {q: self.candidates.queries[q] for q in kept}
            qrels = {q: self.candidates.qrels[q] for q in kept}
            self.candidates = dataclasses.replace(self.candidates, queries=sample, qrels=qrels)
        self.size, self.texts = documents, queries + documents
        return fitting

    def prepare(self, model: SentenceTransformer) -> None:
        if self.split is None:
            self(model)

    def score(self, encoder: Encoder) -> dict[str, float]:
        if self.split is None:
            return self._choose_corpus(encoder)
        documents, queries = self._encode(encoder, self.split.corpus, self.split.queries)
        return self._metrics(queries, documents)

    def _encode(self, encoder: Encoder, corpus: dict[str, str], queries: dict[str, str]) -> tuple[np.ndarray, ...]:
        query_prompt, document_prompt = prompt_names(encoder.model)
        options = {"batch_size": BATCH_SIZE, "show_progress": False}
        documents = encoder.encode(list(corpus.values()), prompt_name=document_prompt, **options)
        return documents, encoder.encode(list(queries.values()), prompt_name=query_prompt, **options)

    def _metrics(self, queries: np.ndarray, documents: np.ndarray) -> dict[str, float]:
        split = self.split
        run = exact_run(list(split.queries), queries, list(split.corpus), documents, max_cutoff(self.keys))
        scores = compute_metrics(run, split.qrels, list(self.keys))
        return {self.keys[name]: value for name, value in scores.mean.items()}

    def _choose_corpus(self, encoder: Encoder) -> dict[str, float]:
        """Pick the dev corpus with the base model (``encoder``) and return the base model's metrics on it."""
        candidates = self.candidates
        chosen = dict.fromkeys(d for q in candidates.queries for d in candidates.qrels[q])  # positives first
        if len(candidates.corpus) <= max(self.size, len(chosen)):
            self.split = candidates
            documents, queries = self._encode(encoder, candidates.corpus, candidates.queries)
            self.baseline = self._metrics(queries, documents)
            return self.baseline
        lexical = _bm25_ranks(candidates, POOL_DEPTH)
        pool = chosen | dict.fromkeys(_round_robin(lexical, 2 * self.size - len(chosen), chosen))
        others = sorted(d for d in candidates.corpus if d not in pool)  # BM25 matched too little: seeded fill
        fill = max(0, min(len(others), 2 * self.size - len(pool)))
        pool |= dict.fromkeys(random.Random(self.seed).sample(others, fill))
        pool_texts = {d: candidates.corpus[d] for d in pool}
        documents, queries = self._encode(encoder, pool_texts, candidates.queries)
        ranked = exact_run(list(candidates.queries), queries, list(pool_texts), documents, POOL_DEPTH)
        mixed = {q: [d for pair in zip_longest(lexical[q], ranked[q]) for d in pair if d] for q in candidates.queries}
        chosen |= dict.fromkeys(_round_robin(mixed, self.size - len(chosen), chosen))
        rows = {d: i for i, d in enumerate(pool_texts)}
        keep = [rows[d] for d in chosen]
        self.split = dataclasses.replace(candidates, corpus={d: candidates.corpus[d] for d in chosen})
        self.texts = len(self.split.queries) + len(self.split.corpus)
        self.baseline = self._metrics(queries, documents[keep])
        return self.baseline


class SimilarityDevEvaluator(DevEvaluator):
    """Pearson and Spearman correlation of cosine similarity with the gold scores of sentence pairs."""

    def __init__(self, pairs: TrainingData, metric: str, precision: str) -> None:
        super().__init__(precision, f"{DEV_NAME}_{metric}_cosine", 2 * len(pairs.dataset))
        rows = pairs.dataset
        self.first, self.second, self.labels = rows["sentence1"], rows["sentence2"], np.asarray(rows["label"])

    def score(self, encoder: Encoder) -> dict[str, float]:
        from scipy.stats import pearsonr, spearmanr

        options = {"batch_size": BATCH_SIZE, "show_progress": False}
        cosine = (encoder.encode(self.first, **options) * encoder.encode(self.second, **options)).sum(axis=1)
        return {
            f"{DEV_NAME}_pearson_cosine": float(pearsonr(self.labels, cosine)[0]),
            f"{DEV_NAME}_spearman_cosine": float(spearmanr(self.labels, cosine)[0]),
        }


def trainer_evaluator(dev: DevEvaluator) -> BaseEvaluator:
    """``dev`` as a sentence-transformers evaluator (``primary_metric``, ``greater_is_better``) for the trainer."""
    return _trainer_evaluator_class()(dev)


@functools.cache
def _trainer_evaluator_class() -> type[BaseEvaluator]:
    # Defined on first use: importing sentence-transformers imports torch, which sets environment
    # variables, and importing this module must change nothing in the process.
    from sentence_transformers.base.evaluation import BaseEvaluator

    class TrainerDevEvaluator(BaseEvaluator):
        def __init__(self, dev: DevEvaluator) -> None:
            super().__init__()
            self.dev, self.texts = dev, dev.texts
            self.primary_metric, self.greater_is_better = dev.primary_metric, True

        def __call__(
            self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1
        ) -> dict[str, float]:
            return self.dev(model)

    return TrainerDevEvaluator


def _ir_key(family: str, k: int) -> str:
    return f"{DEV_NAME}_cosine_{family}@{k}"


def exact_run(
    query_ids: list[str], queries: np.ndarray, doc_ids: list[str], documents: np.ndarray, depth: int
) -> dict[str, dict[str, float]]:
    """Each query's ``depth`` best documents by inner product, best first: the one exact top-k in fp32.

    Exactly ``depth`` (not every document tied with the last one), as ``embedtune eval`` ranks, so
    that a tie at the cut is cut as eval cuts it and pytrec_eval scores the same run.
    """
    scores, rows = ExactTopK(documents).search(queries, depth)
    return {
        qid: {doc_ids[r]: float(s) for s, r in zip(q_scores, q_rows, strict=True)}
        for qid, q_scores, q_rows in zip(query_ids, scores, rows, strict=True)
    }


def build_dev_evaluator(settings: DevSettings, train_data: TrainingData, precision: str) -> DevEvaluator | None:
    """The dev evaluator for this run, or None when there is no dev set.

    Dev data is ``settings.dev_data`` when given, else the ``dev_split`` of a BEIR training folder;
    training from a file without ``dev_data`` has none here (:func:`embedtune.training.holdout.choose_dev`
    then holds out a slice of the training queries).
    """
    source = settings.dev_data
    if source is None:
        if not is_beir_folder(settings.data) or settings.dev_split == NO_DEV:
            return None
        if not settings.has_split():
            _missing_split(settings)
            return None
        source = settings.data
    source = Path(source)
    if is_beir_folder(source):
        family, k = parse_metric(settings.metric, scored=False)
        return RetrievalDevEvaluator(
            sample_split(source, settings), family, k, precision, settings.dev_corpus, settings.seed
        )
    dev = load_training_data(source, score_range=settings.score_range)
    if dev.format == "scored-pair":
        if train_data.format != "scored-pair":
            raise EmbedtuneError(f"{source}: scored-pair dev data for a {train_data.format} training set")
        name, _ = parse_metric(settings.metric, scored=True)
        return SimilarityDevEvaluator(dev, name, precision)
    family, k = parse_metric(settings.metric, scored=False)
    return RetrievalDevEvaluator(pairs_split(dev), family, k, precision, settings.dev_corpus, settings.seed)


def _missing_split(settings: DevSettings) -> None:
    """A dev split that is not there: an error when it was asked for by name, a warning for the default.

    Training on silently without the dev set the user named would pick no checkpoint by the metric
    they chose and report no dev score, with no word why.
    """
    folder = qrels_path(settings.data, settings.split_name).parent
    there = splits_there(folder)
    if settings.dev_split != AUTO_DEV:
        raise SettingError("dev_split", f"no split '{settings.dev_split}' in {folder} ({there})")
    warnings.warn(
        f"no '{settings.split_name}' split in {folder} ({there}): training without dev evaluation",
        EmbedtuneWarning,
        stacklevel=3,
    )


def splits_there(folder: Path) -> str:
    """The qrels splits in ``folder``, in words, for a message about a split that is not there."""
    found = sorted(p.stem for p in folder.glob("*.tsv")) if folder.is_dir() else []
    return f"splits there: {', '.join(found)}" if found else "it has no splits"


def sample_split(root: Path, settings: DevSettings) -> RetrievalSplit:
    """A seeded sample of the dev split's queries (at most ``dev_queries``), with the whole corpus as
    the candidates the dev corpus is chosen from."""
    return sample_queries(load_split(root, settings.split_name), None, settings)


def sample_queries(split: RetrievalSplit, qids: list[str] | None, settings: DevSettings) -> RetrievalSplit:
    """``qids`` of ``split`` (default: all its queries), sampled (seeded) down to ``dev_queries``, with
    the split's whole corpus as the candidates."""
    qids = sorted(split.qrels if qids is None else qids)
    if len(qids) > settings.dev_queries:
        qids = sorted(random.Random(settings.seed).sample(qids, settings.dev_queries))
    qrels = {q: dict(split.qrels[q]) for q in qids}
    return dataclasses.replace(split, queries={q: split.queries[q] for q in qids}, qrels=qrels)


def _bm25_ranks(split: RetrievalSplit, depth: int) -> dict[str, list[str]]:
    """Each query's top-``depth`` documents by BM25 over the whole candidate corpus (matches only)."""
    from embedtune.bm25 import BM25

    hits = BM25(split.corpus).search(list(split.queries.values()), k=depth)
    return {q: [d for d, _ in found] for q, found in zip(split.queries, hits, strict=True)}


def _round_robin(ranked: dict[str, list[str]], count: int, taken: dict[str, None]) -> list[str]:
    """Up to ``count`` documents not in ``taken``: every query's best, then every query's second best, ...

    Rank by rank rather than query by query, so that a small budget gives every query its hardest
    candidates instead of giving a few queries all of theirs.
    """
    found: dict[str, None] = {}
    for rank in range(max((len(docs) for docs in ranked.values()), default=0)):
        for docs in ranked.values():
            if len(found) >= count:
                return list(found)
            if rank < len(docs) and docs[rank] not in taken:
                found[docs[rank]] = None
    return list(found)
