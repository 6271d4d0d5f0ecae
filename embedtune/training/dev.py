"""Dev-set evaluation during training: which evaluator, on which sample, under which precision.

The trainer keeps the checkpoint with the best dev metric, so the dev evaluation runs several times
per run and must be cheap: a retrieval dev set is sampled (queries, and a corpus of their relevant
documents filled up with other documents) and encoded in the training precision (bf16 where
training runs under bf16 autocast, since fp32 encoding is several times slower). A scored-pair dev set gets
Spearman/Pearson correlation instead of ranking metrics.

The numbers are ``embedtune eval``'s: texts are encoded by the same :class:`~embedtune.encoding.Encoder`
(with the model's own prompts, and no cache, since the weights change between evaluations), ranked
by exact inner product, and scored by :func:`embedtune.metrics.compute_metrics` (pytrec_eval). So
the dev metrics on a model card are the ones ``embedtune eval`` reports for the same sample, not
those of a second implementation with its own tie-breaking and its own ``map@k``.
"""

from __future__ import annotations

import functools
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedtune.data import RetrievalSplit, load_split, qrels_path
from embedtune.encoding import Encoder, prompt_names
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.metrics import compute_metrics, max_cutoff
from embedtune.settings import SettingError
from embedtune.training.config import AUTO_DEV, DEV_NAME, NO_DEV, DevSettings, parse_metric
from embedtune.training_data import TrainingData, is_beir_folder, load_training_data

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.evaluation import BaseEvaluator

BATCH_SIZE = 64  # texts per encoding batch
_CELLS = 1 << 24  # query x document scores held at once while ranking (64 MiB of float32)
# Today's metric families -> embedtune.metrics' (sentence-transformers called the hit rate "accuracy").
_FAMILIES = {"accuracy": "hit_rate"}


@dataclass(frozen=True)
class DevSplit:
    """The dev queries, their corpus and their graded qrels (``{query_id: {doc_id: relevance}}``)."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]


class DevEvaluator:
    """Scores a model on the dev set, encoding with :class:`~embedtune.encoding.Encoder` in eval mode.

    ``primary_metric`` is the key (without the trainer's ``eval_`` prefix) that picks the kept
    checkpoint; ``texts`` (how many texts one evaluation encodes) lets the trainer space evaluations
    by their cost. ``max_seq_length``, when set, is the token limit texts are encoded with: the one
    the saved model will search with, not the (maybe shorter) training length, so that the dev
    metric measures the model as it will be used. :func:`trainer_evaluator` hands it to the
    sentence-transformers trainer.
    """

    def __init__(self, precision: str, primary_metric: str, texts: int) -> None:
        self.precision = precision
        self.primary_metric = primary_metric
        self.texts = texts
        self.max_seq_length: int | None = None

    def __call__(self, model: SentenceTransformer) -> dict[str, float]:
        training, length = model.training, model.max_seq_length
        model.eval()  # no dropout while encoding; the trainer's own mode and length are restored after
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        try:
            return self.score(Encoder(model, self.precision, cache=None))
        finally:
            model.train(training)
            model.max_seq_length = length

    def score(self, encoder: Encoder) -> dict[str, float]:
        raise NotImplementedError


class RetrievalDevEvaluator(DevEvaluator):
    """Ranking metrics of a (sampled) retrieval split, keyed as ``dev_cosine_<metric>@<k>``."""

    def __init__(self, split: DevSplit, family: str, k: int, precision: str) -> None:
        super().__init__(precision, _ir_key(family, k), len(split.queries) + len(split.corpus))
        self.split = split
        ks = sorted({10, k})
        wanted = [
            *(("accuracy", c) for c in sorted({1, *ks})),
            *((f, c) for f in ("precision", "recall", "mrr", "ndcg") for c in ks),
            *(("map", c) for c in sorted({100, k})),
        ]
        self.keys = {f"{_FAMILIES.get(f, f)}@{c}": _ir_key(f, c) for f, c in wanted}  # embedtune name -> key

    def score(self, encoder: Encoder) -> dict[str, float]:
        query_prompt, document_prompt = prompt_names(encoder.model)
        corpus, queries = self.split.corpus, self.split.queries
        options = {"batch_size": BATCH_SIZE, "show_progress": False}
        documents = encoder.encode(list(corpus.values()), prompt_name=document_prompt, **options)
        vectors = encoder.encode(list(queries.values()), prompt_name=query_prompt, **options)
        run = exact_run(list(queries), vectors, list(corpus), documents, max_cutoff(self.keys))
        scores = compute_metrics(run, self.split.qrels, list(self.keys))
        return {self.keys[name]: value for name, value in scores.mean.items()}


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
    """Each query's documents by inner product, down to its ``depth``-th best score.

    Documents tied with the last one kept are all kept, so that pytrec_eval, which orders by score
    and then by document id, ranks them as it would rank the whole corpus.
    """
    run: dict[str, dict[str, float]] = {}
    rows = max(1, _CELLS // max(1, len(doc_ids)))
    for start in range(0, len(query_ids), rows):
        scores = queries[start : start + rows] @ documents.T
        if depth < len(doc_ids):
            cut = np.partition(scores, len(doc_ids) - depth, axis=1)[:, len(doc_ids) - depth, None]
            kept = scores >= cut
        else:
            kept = np.ones_like(scores, dtype=bool)
        for qid, row, mask in zip(query_ids[start : start + rows], scores, kept, strict=True):
            run[qid] = {doc_ids[c]: float(row[c]) for c in np.flatnonzero(mask)}
    return run


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
        return RetrievalDevEvaluator(sample_split(source, settings), family, k, precision)
    dev = load_training_data(source, score_range=settings.score_range)
    if dev.format == "scored-pair":
        if train_data.format != "scored-pair":
            raise EmbedtuneError(f"{source}: scored-pair dev data for a {train_data.format} training set")
        name, _ = parse_metric(settings.metric, scored=True)
        return SimilarityDevEvaluator(dev, name, precision)
    family, k = parse_metric(settings.metric, scored=False)
    return RetrievalDevEvaluator(pairs_as_retrieval(dev), family, k, precision)


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


def sample_split(root: Path, settings: DevSettings) -> DevSplit:
    """A seeded sample of the dev split: ``dev_queries`` queries and a corpus of ``dev_corpus`` documents
    that holds every relevant document of those queries."""
    return sample_queries(load_split(root, settings.split_name), None, settings)


def sample_queries(split: RetrievalSplit, qids: list[str] | None, settings: DevSettings) -> DevSplit:
    """``qids`` of ``split`` (default: all its queries), sampled down to ``dev_queries``, with a seeded
    corpus of ``dev_corpus`` documents that holds every relevant document of the queries kept."""
    rng = random.Random(settings.seed)
    qids = sorted(split.qrels if qids is None else qids)
    if len(qids) > settings.dev_queries:
        qids = sorted(rng.sample(qids, settings.dev_queries))
    qrels = {q: dict(split.qrels[q]) for q in qids}
    keep = {d for docs in qrels.values() for d in docs}
    others = [d for d in split.corpus if d not in keep]
    fill = max(0, settings.dev_corpus - len(keep))
    keep.update(rng.sample(others, min(fill, len(others))))
    corpus = {d: split.corpus[d] for d in split.corpus if d in keep}
    return DevSplit({q: split.queries[q] for q in qids}, corpus, qrels)


def pairs_as_retrieval(dev: TrainingData, others: list[str] = ()) -> DevSplit:
    """Turn (query, positive[, negatives]) rows into a retrieval set: every distinct text gets an id.

    ``others`` (documents of other rows) are added to the corpus as distractors.
    """
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}

    def doc_id(text: str) -> str:
        return corpus.setdefault(text, f"d{len(corpus)}")

    for row in dev.dataset:
        qid = queries.setdefault(row["anchor"], f"q{len(queries)}")
        qrels.setdefault(qid, {})[doc_id(row["positive"])] = 1
        for column in dev.text_columns[2:]:
            doc_id(row[column])
    for text in others:
        doc_id(text)
    return DevSplit({v: k for k, v in queries.items()}, {v: k for k, v in corpus.items()}, qrels)
