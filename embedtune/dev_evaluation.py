"""Dev-set evaluation during training: which evaluator, on which sample, under which precision.

The trainer keeps the checkpoint with the best dev metric, so the dev evaluation runs several times
per run and must be cheap: a retrieval dev set is sampled (queries, and a corpus of their relevant
documents filled up with other documents) and encoded under the same bf16 autocast as training.
A scored-pair dev set gets Spearman/Pearson correlation instead of ranking metrics.
"""

from __future__ import annotations

import random
import re
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtune.data import load_split, qrels_path
from embedtune.errors import EmbedtuneError
from embedtune.training_data import TrainingData, is_beir_folder, load_training_data

if TYPE_CHECKING:
    from embedtune.train import TrainConfig

DEV_NAME = "dev"
IR_METRICS = ("ndcg", "mrr", "map", "recall", "precision", "accuracy")
SIMILARITY_METRICS = ("spearman", "pearson")
_IR_METRIC = re.compile(r"^(ndcg|mrr|map|recall|precision|accuracy)@(\d+)$")


def metric_label(key: str) -> str:
    """The short name of a trainer metric key: ``eval_dev_cosine_ndcg@10`` -> ``ndcg@10``."""
    name = key.removeprefix(f"eval_{DEV_NAME}_")
    return name.removeprefix("cosine_").removesuffix("_cosine")


def _autocast_evaluator(inner, precision: str, texts: int):
    """Wrap an evaluator so it encodes under the training precision (fp32 encoding is ~3x slower here).

    ``texts`` (how many texts one evaluation encodes) lets the trainer space evaluations by their cost.
    """
    import torch
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    class AutocastEvaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.texts = texts
            self.greater_is_better = inner.greater_is_better

        @property
        def primary_metric(self):
            return self.inner.primary_metric

        @primary_metric.setter
        def primary_metric(self, value) -> None:  # the base class assigns it in __init__
            pass

        def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, Any]:
            device = "cuda" if str(model.device).startswith("cuda") else "cpu"
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
            context = torch.autocast(device, dtype=dtype) if dtype is not None else nullcontext()
            with context, torch.no_grad():
                return {k: float(v) for k, v in self.inner(model, None, epoch, steps).items()}

    return AutocastEvaluator()


def _parse_metric(metric: str, scored: bool) -> tuple[str, int | None]:
    if metric == "auto":
        return ("spearman", None) if scored else ("ndcg", 10)
    if scored:
        if metric not in SIMILARITY_METRICS:
            raise EmbedtuneError(
                f"metric '{metric}' does not apply to scored pairs; use {' or '.join(SIMILARITY_METRICS)}"
            )
        return metric, None
    match = _IR_METRIC.match(metric)
    if not match:
        raise EmbedtuneError(f"unknown dev metric '{metric}'; use one of {', '.join(m + '@k' for m in IR_METRICS)}")
    return match.group(1), int(match.group(2))


def build_dev_evaluator(config: TrainConfig, train_data: TrainingData, precision: str):
    """The dev evaluator for this run and the trainer's key of its chosen metric, or ``(None, None)``.

    Dev data is ``config.dev_data`` when given, else the ``dev_split`` of a BEIR training folder;
    training from a file without ``dev_data`` has no dev set.
    """
    source = config.dev_data
    if source is None:
        if not is_beir_folder(config.data) or not qrels_path(config.data, config.dev_split).is_file():
            return None, None
        source = config.data
    source = Path(source)
    if is_beir_folder(source):
        queries, corpus, relevant = _sample_split(source, config)
        return _ir(queries, corpus, relevant, config, precision)
    dev = load_training_data(source, score_range=config.score_range)
    if dev.format == "scored-pair":
        if train_data.format != "scored-pair":
            raise EmbedtuneError(f"{source}: scored-pair dev data for a {train_data.format} training set")
        name, _ = _parse_metric(config.metric, scored=True)
        from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

        rows = dev.dataset
        inner = EmbeddingSimilarityEvaluator(
            rows["sentence1"], rows["sentence2"], rows["label"], batch_size=64, name=DEV_NAME, write_csv=False
        )
        return _autocast_evaluator(inner, precision, 2 * len(rows)), f"eval_{DEV_NAME}_{name}_cosine"
    return _ir(*_pairs_as_retrieval(dev), config, precision)


def _ir(queries: dict, corpus: dict, relevant: dict, config: TrainConfig, precision: str):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    name, k = _parse_metric(config.metric, scored=False)
    ks = sorted({10, k})
    inner = InformationRetrievalEvaluator(
        queries,
        corpus,
        relevant,
        mrr_at_k=ks,
        ndcg_at_k=ks,
        accuracy_at_k=sorted({1, *ks}),
        precision_recall_at_k=ks,
        map_at_k=sorted({100, k}),
        batch_size=64,
        name=DEV_NAME,
        write_csv=False,
        query_prompt=config.query_prompt,
        corpus_prompt=config.document_prompt,
    )
    return _autocast_evaluator(inner, precision, len(queries) + len(corpus)), f"eval_{DEV_NAME}_cosine_{name}@{k}"


def _sample_split(root: Path, config: TrainConfig) -> tuple[dict, dict, dict]:
    """A seeded sample of the dev split: ``dev_queries`` queries and a corpus of ``dev_corpus`` documents
    that holds every relevant document of those queries."""
    split = load_split(root, config.dev_split)
    rng = random.Random(config.seed)
    qids = sorted(split.qrels)
    if len(qids) > config.dev_queries:
        qids = sorted(rng.sample(qids, config.dev_queries))
    relevant = {q: set(split.qrels[q]) for q in qids}
    keep = set().union(*relevant.values())
    others = [d for d in split.corpus if d not in keep]
    fill = max(0, config.dev_corpus - len(keep))
    keep.update(rng.sample(others, min(fill, len(others))))
    corpus = {d: split.corpus[d] for d in split.corpus if d in keep}
    return {q: split.queries[q] for q in qids}, corpus, relevant


def _pairs_as_retrieval(dev: TrainingData) -> tuple[dict, dict, dict]:
    """Turn (query, positive[, negatives]) rows into a retrieval set: every distinct text gets an id."""
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}

    def doc_id(text: str) -> str:
        return corpus.setdefault(text, f"d{len(corpus)}")

    for row in dev.dataset:
        qid = queries.setdefault(row["anchor"], f"q{len(queries)}")
        relevant.setdefault(qid, set()).add(doc_id(row["positive"]))
        for column in dev.text_columns[2:]:
            doc_id(row[column])
    return {v: k for k, v in queries.items()}, {v: k for k, v in corpus.items()}, relevant
