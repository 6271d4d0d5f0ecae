"""Which dev set a run picks its checkpoint on, and a held-out slice of the training queries when the data has none.

Without a dev set a run trains blind: no checkpoint is chosen, nothing says whether the model got
better, and a model worse than its base is kept without a word. A BEIR folder without a ``dev``
split, or a pairs file without ``dev_data``, is the common case on a new dataset, so by default
(``dev_split="auto"``) a seeded slice of the training queries is held out (``dev_holdout``, at most
``dev_queries``) and becomes the dev set. The slice is made of whole queries: every row of a held-out
query text leaves the training data (query ids that share one text go together), so no dev query
is ever trained on. ``dev_split="none"`` opts out; data too small to spare a handful of queries
trains without a dev set, with a warning.

Whatever was chosen is said in a :class:`~embedtune.training.choices.Choice`.
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from dataclasses import dataclass

from embedtune.data import load_split
from embedtune.errors import EmbedtuneWarning
from embedtune.settings import SettingError
from embedtune.splits import pairs_split
from embedtune.training.choices import Choice
from embedtune.training.config import AUTO_DEV, NO_DEV, DevSettings, parse_metric
from embedtune.training.dev import (
    DevEvaluator,
    RetrievalDevEvaluator,
    SimilarityDevEvaluator,
    build_dev_evaluator,
    sample_queries,
)
from embedtune.training_data import TrainingData, is_beir_folder

MIN_HOLDOUT = 5  # fewer held-out queries than this make a dev metric too coarse to pick a checkpoint


@dataclass
class DevPlan:
    """The dev evaluator (None: no dev set), the training rows left for training, and the choice in words.

    ``held_out`` lists the held-out query texts (sorted; empty unless the dev set is a held-out slice).
    """

    evaluator: DevEvaluator | None
    data: TrainingData
    choice: Choice
    held_out: list[str] = dataclasses.field(default_factory=list)


def choose_dev(settings: DevSettings, data: TrainingData, precision: str) -> DevPlan:
    """The dev set of a run with dev evaluation on: ``dev_data``, the dev split, a held-out slice, or none."""
    if settings.dev_data is not None:
        evaluator = build_dev_evaluator(settings, data, precision)
        return DevPlan(evaluator, data, Choice(str(settings.dev_data), "given", "dev_data"))
    beir = is_beir_folder(settings.data)
    if settings.dev_split == NO_DEV:
        return DevPlan(None, data, Choice(NO_DEV, "given", "dev_split='none': no dev evaluation, no checkpoint choice"))
    if beir and settings.has_split():
        evaluator = build_dev_evaluator(settings, data, precision)
        return DevPlan(evaluator, data, Choice(f"split '{settings.split_name}'", "data", "the data's dev split"))
    if settings.dev_split != AUTO_DEV:
        if beir:
            build_dev_evaluator(settings, data, precision)  # raises: the split asked for by name is missing
        raise SettingError("dev_split", f"'{settings.dev_split}' names a qrels split, but {settings.data} is a file")
    return _held_out(settings, data, precision, beir)


def _held_out(settings: DevSettings, data: TrainingData, precision: str, beir: bool) -> DevPlan:
    where = f"no '{settings.split_name}' split in {settings.data}" if beir else "no dev_data"
    column = data.text_columns[0]
    texts = data.dataset[column]
    distinct = sorted(set(texts))
    count = min(settings.dev_queries, round(settings.dev_holdout * len(distinct)))
    if count < MIN_HOLDOUT:
        why = (
            f"{where}, and dev_holdout={settings.dev_holdout:g} of {len(distinct)} training queries holds out "
            f"fewer than {MIN_HOLDOUT}: training without dev evaluation or checkpoint choice"
        )
        warnings.warn(why, EmbedtuneWarning, stacklevel=4)
        return DevPlan(None, data, Choice(NO_DEV, "data too small", why))
    held = set(random.Random(settings.seed).sample(distinct, count))
    keep = [i for i, text in enumerate(texts) if text not in held]
    dropped = [i for i, text in enumerate(texts) if text in held]
    train = dataclasses.replace(data, dataset=data.dataset.select(keep))
    dev = dataclasses.replace(data, dataset=data.dataset.select(dropped))
    evaluator = _evaluator(settings, train, dev, held, precision, beir)
    why = (
        f"{where}: {count} of {len(distinct)} training queries ({len(dropped)} rows) held out, seeded, "
        f"dev_holdout={settings.dev_holdout:g} capped at dev_queries={settings.dev_queries}; not trained on"
    )
    return DevPlan(evaluator, train, Choice(f"{count} held-out training queries", "data", why), sorted(held))


def _evaluator(
    settings: DevSettings, train: TrainingData, dev: TrainingData, held: set[str], precision: str, beir: bool
) -> DevEvaluator:
    """The evaluator of the held-out rows: over the BEIR corpus, or over the rows' own texts."""
    if dev.format == "scored-pair":
        name, _ = parse_metric(settings.metric, scored=True)
        return SimilarityDevEvaluator(dev, name, precision)
    family, k = parse_metric(settings.metric, scored=False)
    if beir:  # the held-out queries' qrels, ranked against the whole corpus as the dev split would be
        split = load_split(settings.data, settings.split)
        qids = [q for q, text in split.queries.items() if text in held]
        candidates = sample_queries(split, qids, settings)
        return RetrievalDevEvaluator(candidates, family, k, precision, settings.dev_corpus, settings.seed)
    # A pairs file has no corpus: the other rows' documents are the candidates the dev corpus is chosen from.
    others = sorted({text for column in train.text_columns[1:] for text in train.dataset[column]})
    candidates = pairs_split(dev, others)
    return RetrievalDevEvaluator(candidates, family, k, precision, settings.dev_corpus, settings.seed)
