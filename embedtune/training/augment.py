"""Training-data augmentation: pairs built from the corpus, and noise on the training queries.

Both are off by default (``corpus_pairs=0``, ``query_noise=0``) and both run once, seeded, on rank 0
before the schedule is chosen, so that the schedule counts the rows the run really trains on, a
resumed run rebuilds exactly the same rows (its choices are compared with the first part's), and
every process of a data-parallel run trains on one copy. What was built is said as a
:class:`~embedtune.training.choices.Choice`, which goes to the log, the run record and the card.

* **Corpus pairs** (domain adaptation from unlabelled documents). From the corpus of a BEIR data
  folder, ``corpus_pairs`` extra pairs per labelled pair: a document's title -> its text when it
  has a title, else one of its sentences (or, for a one-sentence document, a short span of words)
  -> the rest of the document with that sentence removed, so the pair cannot be matched by copying.
  Documents that are not positives of the training qrels come first, so the extra pairs teach
  what the labelled ones do not; the dev and test queries are never read. Documents too short to
  split are skipped and counted. The pairs are plain (anchor, positive) rows mixed into the
  labelled pairs under the same loss: a BEIR folder always trains on pairs, so the rows have the
  same columns. Data of other shapes (a mined n-tuple file, scored pairs) is refused rather than
  padded, since a row without its negatives would need a loss of its own.
* **Query noise**. Each training query (the ``anchor`` column only) is picked with probability
  ``query_noise`` and gets one edit, chosen uniformly among those that apply to it: a word
  deleted, two adjacent words swapped, or a word replaced by a WordNet synonym
  (:mod:`embedtune.training.wordnet`; without a WordNet database only the first two, and the
  choice says so). A one-word query with no synonym stays as it is and is counted. The noise is
  applied once before training, not redrawn each epoch, which keeps runs and resumes identical.
"""

from __future__ import annotations

import dataclasses
import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from embedtune.data import corpus_file, load_qrels, qrels_path, read_jsonl
from embedtune.settings import SettingError
from embedtune.training.choices import Choice
from embedtune.training.wordnet import find_wordnet, synonyms

if TYPE_CHECKING:
    from datasets import Dataset

    from embedtune.training.config import TrainConfig
    from embedtune.training_data import TrainingData

MIN_QUERY_WORDS = 3  # a sentence shorter than this is no query
MIN_REST_WORDS = 8  # what is left of the document must still be a passage
SPAN_DOC_WORDS = 16  # a one-sentence document this long gives a span of words instead
SPAN_WORDS = (4, 12)  # a span's length: a quarter of the document, within these bounds
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
OPERATIONS = ("deletion", "swap", "synonym")


@dataclass
class CorpusPairs:
    """Pairs built from a corpus, and how: ``titled`` title -> text, ``split`` sentence/span -> rest."""

    anchors: list[str] = field(default_factory=list)
    positives: list[str] = field(default_factory=list)
    titled: int = 0
    split: int = 0
    skipped: int = 0  # documents too short to split
    fresh: int = 0  # documents available that are not training positives


def augment(config: TrainConfig, data: TrainingData) -> tuple[TrainingData, dict[str, Choice]]:
    """``data`` with the corpus pairs and the query noise ``config`` asks for, and a choice for each."""
    choices: dict[str, Choice] = {}
    if config.corpus_pairs > 0:
        data, choices["corpus_pairs"] = _add_corpus_pairs(config, data)
    if config.query_noise > 0:
        data, choices["query_noise"] = _add_query_noise(config, data)
    return data, choices


def _add_corpus_pairs(config: TrainConfig, data: TrainingData) -> tuple[TrainingData, Choice]:
    from datasets import Dataset, concatenate_datasets

    from embedtune.training_data import is_beir_folder

    if not is_beir_folder(config.data) or data.text_columns != ["anchor", "positive"]:
        raise SettingError(
            "corpus_pairs",
            f"needs a BEIR folder (corpus.jsonl) as the training data, to pair its documents; {config.data} "
            f"gives {data.format}s",
        )
    labelled = len(data.dataset)
    wanted = round(config.corpus_pairs * labelled)
    avoid = {doc for docs in load_qrels(qrels_path(config.data, config.split)).values() for doc in docs}
    built = corpus_pairs(config.data, wanted, config.seed, avoid)
    extra = Dataset.from_dict({"anchor": built.anchors, "positive": built.positives})
    dataset = concatenate_datasets([data.dataset, extra]) if built.anchors else data.dataset
    why = (
        f"{len(built.anchors)} of {wanted} asked ({config.corpus_pairs:g} x {labelled} labelled pairs): "
        f"{built.titled} title -> text, {built.split} sentence -> rest of its document; documents that are "
        f"not training positives first ({built.fresh} of them); {built.skipped} too short to split"
    )
    return _replace(data, dataset), Choice(len(built.anchors), "data", why)


def corpus_pairs(root: Path, wanted: int, seed: int, avoid: frozenset[str] | set[str] = frozenset()) -> CorpusPairs:
    """Up to ``wanted`` (pseudo-query, passage) pairs from the corpus of the BEIR folder ``root``.

    Documents are visited in a seeded order, those not in ``avoid`` (the training positives) first;
    each gives at most one pair.
    """
    rng = random.Random(f"corpus-pairs:{seed}")
    path = corpus_file(root)
    documents = [(obj["_id"], obj.get("title") or "", obj["text"]) for _, obj in read_jsonl(path)]
    fresh = [d for d in documents if d[0] not in avoid]
    used = [d for d in documents if d[0] in avoid]
    rng.shuffle(fresh)
    rng.shuffle(used)
    built = CorpusPairs(fresh=len(fresh))
    for _, title, text in fresh + used:
        if len(built.anchors) >= wanted:
            break
        pair = _pair(title.strip(), " ".join(text.split()), rng)
        if pair is None:
            built.skipped += 1
            continue
        built.anchors.append(pair[0])
        built.positives.append(pair[1])
        if title.strip():
            built.titled += 1
        else:
            built.split += 1
    return built


def _pair(title: str, text: str, rng: random.Random) -> tuple[str, str] | None:
    """Title -> text; else a sentence (or a span of words) -> the rest; None when the text is too short."""
    if title and text and title != text:
        return title, text
    sentences = _SENTENCE_END.split(text)
    words = [len(s.split()) for s in sentences]
    total = sum(words)
    eligible = [i for i, n in enumerate(words) if n >= MIN_QUERY_WORDS and total - n >= MIN_REST_WORDS]
    if len(sentences) > 1 and eligible:
        i = rng.choice(eligible)
        return sentences[i], " ".join(sentences[:i] + sentences[i + 1 :])
    tokens = text.split()
    if len(tokens) < SPAN_DOC_WORDS:
        return None
    size = max(SPAN_WORDS[0], min(SPAN_WORDS[1], len(tokens) // 4))
    start = rng.randrange(len(tokens) - size + 1)
    return " ".join(tokens[start : start + size]), " ".join(tokens[:start] + tokens[start + size :])


def _add_query_noise(config: TrainConfig, data: TrainingData) -> tuple[TrainingData, Choice]:
    if data.text_columns[0] != "anchor":
        raise SettingError("query_noise", f"applies to queries, and {data.format}s have none (no anchor column)")
    queries = data.dataset["anchor"]
    root = find_wordnet()
    table = synonyms(root, {w.strip(string.punctuation) for q in queries for w in q.split()}) if root else None
    noisy, counts = noise_queries(queries, config.query_noise, config.seed, table)
    dataset = data.dataset.remove_columns("anchor").add_column("anchor", noisy)
    dataset = dataset.select_columns(data.dataset.column_names)  # the column order the losses expect
    source = f"WordNet at {root}" if root else "no WordNet database (apt-get install wordnet-base): no synonyms"
    changed = sum(counts[op] for op in OPERATIONS)
    why = (
        f"{changed} of {len(queries)} queries edited once before training (rate {config.query_noise:g}, seeded): "
        + ", ".join(f"{op} {counts[op]}" for op in OPERATIONS)
        + f"; {counts['unchanged']} picked but too short to edit; synonyms: {source}"
    )
    return _replace(data, dataset), Choice(changed, "data", why)


def noise_queries(
    queries: list[str], rate: float, seed: int, table: dict[str, list[str]] | None = None
) -> tuple[list[str], Counter]:
    """Each query picked with probability ``rate`` gets one edit (deletion, swap, or a synonym from
    ``table``); returns the queries and how many of each edit, plus ``unchanged`` (picked, no edit applies)."""
    rng = random.Random(f"query-noise:{seed}")
    counts: Counter = Counter()
    out = []
    for query in queries:
        if rng.random() >= rate:
            out.append(query)
            continue
        words = query.split()
        replaceable = [i for i, w in enumerate(words) if (table or {}).get(w.strip(string.punctuation).lower())]
        edits = [
            op
            for op, applies in zip(OPERATIONS, (len(words) > 1, len(words) > 1, bool(replaceable)), strict=True)
            if applies
        ]
        if not edits:
            counts["unchanged"] += 1
            out.append(query)
            continue
        op = rng.choice(edits)
        counts[op] += 1
        out.append(" ".join(_edit(words, op, replaceable, table or {}, rng)))
    return out, counts


def _edit(
    words: list[str], op: str, replaceable: list[int], table: dict[str, list[str]], rng: random.Random
) -> list[str]:
    words = list(words)
    if op == "deletion":
        del words[rng.randrange(len(words))]
    elif op == "swap":
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        i = rng.choice(replaceable)
        core = words[i].strip(string.punctuation)
        synonym = rng.choice(table[core.lower()])
        if core[:1].isupper():
            synonym = synonym[:1].upper() + synonym[1:]
        words[i] = words[i].replace(core, synonym, 1)
    return words


def _replace(data: TrainingData, dataset: Dataset) -> TrainingData:
    return dataclasses.replace(data, dataset=dataset)
