"""What mining reads: the selection settings (:class:`MiningConfig`) and the pairs to mine for (:class:`MiningInput`).

A config refuses bad values when it is made (the CLI, a YAML file and the Python API get the same
one-line error), so minutes of encoding never precede a rank window that cannot hold the negatives.
Input problems that leave most of the split unusable are errors; smaller ones are counted and warned
about (:class:`~embedtune.errors.EmbedtuneWarning`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedtune.data import find_data_file, load_corpus, load_qrels, load_queries, qrels_path, require_dataset_folder
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.retrieval import RetrievalInput
from embedtune.settings import setting, validate
from embedtune.splits import load_retrieval

SAMPLINGS = ("top", "random")
SHORT_ROWS = ("pad", "pair", "drop")


@dataclass
class MiningConfig:
    """How negatives are chosen. The default filter is NV-Retriever's best setting (TopK-PercPos 95%).

    ``relative_margin=0.05`` drops candidates scoring above ``pos - 0.05 * |pos|`` (95 % of a positive
    score); ``absolute_margin=m`` drops those above ``pos - m``; ``max_score`` drops those above it.
    ``None`` switches a rule off. ``chunk_size`` queries are retrieved at a time.
    """

    num_negatives: int = setting(
        1,
        help="Negatives per (query, positive) row; a row with fewer survivors is searched deeper, then handled as "
        "short_rows says. 1 (triplets): the in-batch negatives already give each query the batch's other "
        "documents, and every negative more adds a document to each row's step cost (benchmarks/regimes.py).",
        min=1,
    )
    min_rank: int = setting(
        1, help="First rank (1 = best) of the retriever's ranking that may become a negative.", min=1
    )
    max_rank: int = setting(50, help="Last rank considered.", min=1)
    sampling: str = setting(
        "top",
        help="top = the best-ranked survivors; random = a seeded random draw among the window's survivors.",
        choices=SAMPLINGS,
    )
    relative_margin: float | None = setting(
        0.05,
        help="Drop candidates scoring above pos - margin*|pos| (0.05 = above 95% of the positive's score, "
        "NV-Retriever's TopK-PercPos); 'none' switches it off.",
        min=0,
        below=1,
    )
    absolute_margin: float | None = setting(None, help="Drop candidates scoring above pos - margin.")
    max_score: float | None = setting(
        None, help="Drop candidates scoring above this (scale of the retriever: cosine, or raw BM25)."
    )
    widen_max_rank: int = setting(
        1000,
        help="Rows with fewer survivors than num_negatives are searched again with the window's end doubled, "
        "down to this rank at most (or the corpus); at or below max_rank, no row is searched again.",
        min=1,
    )
    short_rows: str = setting(
        "pad",
        help="Rows still short of negatives: pad = keep them, their lowest-scored negative repeated (a row with "
        "none as a plain pair); pair = keep them as plain pairs; drop = leave them out.",
        choices=SHORT_ROWS,
    )
    seed: int = setting(42, help="Seed of random sampling.")
    chunk_size: int = setting(2048, help="Queries retrieved at a time (bounds the candidates in memory).", min=1)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Each setting on its own (type, choices, range), then the rank window they make together."""
        validate(self)
        if self.min_rank > self.max_rank:
            raise EmbedtuneError(f"rank window is empty: min_rank {self.min_rank} > max_rank {self.max_rank}")
        if self.max_rank - self.min_rank + 1 < self.num_negatives:
            raise EmbedtuneError(
                f"rank window {self.min_rank}..{self.max_rank} holds {self.max_rank - self.min_rank + 1} candidates, "
                f"fewer than the {self.num_negatives} negatives asked for"
            )


@dataclass
class MiningInput(RetrievalInput):
    """A corpus, queries, and the (query, positive) pairs to mine for, all by position.

    ``pair_query[r]``/``pair_doc[r]`` are the query and corpus rows of pair ``r``. Every pair of a
    query counts as a known positive of that query. ``warnings`` keeps what loading warned about,
    for the mining report.
    """

    pair_query: np.ndarray
    pair_doc: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pair_query = np.asarray(self.pair_query, dtype=np.int64)
        self.pair_doc = np.asarray(self.pair_doc, dtype=np.int64)
        if len(self.pair_query) == 0:
            raise EmbedtuneError("nothing to mine: no (query, positive) pairs")

    def warn(self, message: str) -> None:
        """Warn now and keep the message for the report."""
        warnings.warn(message, EmbedtuneWarning, stacklevel=3)
        self.warnings.append(message)


def _judged_query_ids(path: Path) -> set[str]:
    """Query ids named in a qrels file, relevant or not (to count queries left without a positive)."""
    with path.open(encoding="utf-8") as f:
        next(f, None)
        return {line.split("\t", 1)[0].strip() for line in f if line.strip()}


def load_mining_input(root: Path, split: str = "train") -> MiningInput:
    """Pairs of a BEIR split (every relevant document a positive) with the whole corpus as candidates;
    ``root`` may also be a pairs file (every pair in ``split``, its documents the corpus).

    Qrels that point at documents missing from the corpus, and queries judged with no relevant
    document, are counted and warned about; if they are most of the split, it is an error.
    """
    from_pairs = Path(root).is_file()
    if from_pairs:  # a pairs file: every pair in ``split``, its positives and negatives the corpus
        read = load_retrieval(Path(root), split)
        corpus, queries, qrels, path = read.corpus, read.queries, read.qrels, Path(root)
    else:
        root = require_dataset_folder(root)
        corpus = load_corpus(find_data_file(root, "corpus.jsonl"))
        queries = load_queries(find_data_file(root, "queries.jsonl"))
        path = qrels_path(root, split)
        qrels = load_qrels(path, query_ids=queries)
    doc_row = {doc_id: i for i, doc_id in enumerate(corpus)}
    query_ids = list(qrels)
    pairs = [(qi, d) for qi, q in enumerate(query_ids) for d in qrels[q]]
    missing = [(qi, d) for qi, d in pairs if d not in doc_row]
    if missing and 2 * len(missing) > len(pairs):
        raise EmbedtuneError(f"{_missing_message(path, missing, pairs)}; is this the corpus the qrels were made for?")
    kept = [(qi, doc_row[d]) for qi, d in pairs if d in doc_row]
    data = MiningInput(
        doc_ids=list(corpus),
        doc_texts=list(corpus.values()),
        query_ids=query_ids,
        query_texts=[queries[q] for q in query_ids],
        pair_query=np.array([qi for qi, _ in kept]),
        pair_doc=np.array([d for _, d in kept]),
    )
    if missing:
        data.warn(f"{_missing_message(path, missing, pairs)}; those pairs are skipped")
    no_positive = 0 if from_pairs else len(_judged_query_ids(path) - set(qrels))
    if no_positive:
        data.warn(f"{path}: {no_positive} queries have no relevant document (score > 0) and are skipped")
    return data


def _missing_message(path: Path, missing: list[tuple[int, str]], pairs: list[tuple[int, str]]) -> str:
    return (
        f"{path}: {len(missing)} of {len(pairs)} (query, positive) pairs name documents missing from the "
        f"corpus (e.g. '{missing[0][1]}')"
    )
