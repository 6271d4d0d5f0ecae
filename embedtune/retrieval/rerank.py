"""Cross-encoder scoring: reranking a retriever's candidates, and a teacher's scores for mining.

A cross-encoder reads query and document together, so it ranks better than a bi-encoder but scores
only the pairs it is given. :class:`Reranker` loads a sentence-transformers ``CrossEncoder`` from a
local directory (never the Hub) and refuses, in one line, a directory that is not one: a bi-encoder
or a bare BERT checkpoint would load with a randomly initialised classification head and rank at
random without any error. :func:`rerank_head` is the one reranking of a ranked list (the searcher's
and :class:`RerankRetriever`'s, which puts a cross-encoder behind the Retriever contract of any
first stage); its scores are the cross-encoder's (raw logits, so margins between pairs stay
comparable for distillation).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.models import check_role
from embedtune.retrieval.base import Retriever


def check_depth(depth: int, k: int) -> None:
    """A reranker can only return what it rescored: ``depth`` candidates must cover ``k`` results."""
    if depth < k:
        raise EmbedtuneError(f"rerank_depth ({depth}) must be at least k ({k}): only reranked candidates are returned")


class Reranker:
    """A local cross-encoder, loaded once, scoring (query, document) pairs."""

    def __init__(self, model_dir: str | Path, *, device: str | None = None, batch_size: int = 32) -> None:
        from sentence_transformers import CrossEncoder

        path = Path(model_dir)
        if not path.is_dir():
            raise EmbedtuneError(f"{path}: no such cross-encoder directory")
        check_role(path, "reranker")
        try:
            self.model = CrossEncoder(str(path), device=device, local_files_only=True, activation_fn=_identity())
        except (OSError, ValueError) as e:
            raise EmbedtuneError(f"{path}: cannot load the cross-encoder ({e})") from e
        self.path, self.batch_size = path, batch_size

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        """The score of ``queries[i]`` with ``documents[i]`` for each ``i`` (higher is more relevant)."""
        if not len(queries):
            return np.zeros(0, dtype=np.float32)
        pairs = list(zip(queries, documents, strict=True))
        scores = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs))

    def rerank(self, queries: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Scores of each query's candidate texts, scored in one batch across queries."""
        flat_q = [q for q, docs in zip(queries, candidates, strict=True) for _ in docs]
        scores = self.score(flat_q, [d for docs in candidates for d in docs])
        bounds = np.cumsum([0, *(len(docs) for docs in candidates)])
        return [scores[a:b] for a, b in itertools.pairwise(bounds)]


def rescore(
    reranker: Reranker, queries: Sequence[str], ids: np.ndarray, text_of: Callable[[int], str], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)``: each query's candidate ``ids`` (-1 = none) re-sorted by the cross-encoder, top ``k``."""
    kept = [row[row >= 0] for row in np.asarray(ids)]
    scored = reranker.rerank(queries, [[text_of(int(i)) for i in row] for row in kept])
    width = min(k, ids.shape[1])
    out_scores = np.zeros((len(kept), width), dtype=np.float32)
    out_ids = np.full((len(kept), width), -1, dtype=np.int64)
    for i, (row, scores) in enumerate(zip(kept, scored, strict=True)):
        order = np.argsort(-scores, kind="stable")[:width]
        out_scores[i, : len(order)] = scores[order]
        out_ids[i, : len(order)] = row[order]
    return out_scores, out_ids


def rerank_head(
    reranker: Reranker, queries: Sequence[str], ids: np.ndarray, text_of: Callable[[int], str], depth: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of a first-stage ranking ``ids`` (-1 pads) whose head of ``depth`` is reranked.

    The head comes back in the cross-encoder's order and scores; a ``k`` beyond ``depth`` (an
    evaluation at @100 over a rerank of 50) continues with the rest of the first stage's ranking in
    its order, scored below the head (rankers sort by score).
    """
    scores, head = rescore(reranker, queries, ids[:, :depth], text_of, depth)
    tail = ids[:, depth:]
    if tail.shape[1] == 0:
        return scores[:, :k], head[:, :k]
    floor = np.where(head >= 0, scores, np.inf).min(axis=1, initial=np.inf)
    floor = np.where(np.isfinite(floor), floor, 0.0)
    tail_scores = (floor[:, None] - 1 - np.arange(tail.shape[1])).astype(np.float32)
    return np.concatenate([scores, tail_scores], axis=1)[:, :k], np.concatenate([head, tail], axis=1)[:, :k]


def _identity():
    import torch

    return torch.nn.Identity()


class RerankRetriever:
    """The top ``depth`` of ``base``, rescored by a cross-encoder and re-sorted (a :class:`Retriever`).

    ``query_texts`` and ``doc_texts`` are the texts of the rows ``base`` answers in. A search for more
    than ``depth`` results (an evaluation at @100 over a rerank of 50) returns the reranked head, then
    the rest of ``base``'s ranking in its order, scored below the head (rankers sort by score).
    """

    def __init__(
        self,
        base: Retriever,
        reranker: Reranker,
        query_texts: Sequence[str],
        doc_texts: Sequence[str],
        depth: int,
    ) -> None:
        self.base, self.reranker, self.depth = base, reranker, depth
        self.query_texts, self.doc_texts = query_texts, doc_texts
        self.name = f"{base.name}+rerank:{reranker.path.name}"

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, rows = self.base.search(query_rows, max(self.depth, k))
        queries = [self.query_texts[q] for q in query_rows]
        return rerank_head(self.reranker, queries, rows, self.doc_texts.__getitem__, self.depth, k)

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        return self.reranker.score([self.query_texts[q] for q in query_rows], [self.doc_texts[d] for d in doc_rows])


class ScorerRetriever(RerankRetriever):
    """``base``'s candidates in ``base``'s own order, every score the cross-encoder's: a teacher for mining.

    Mining keeps its rank window and filters over the first-stage ranking, but its margins (false-negative
    filtering) and the scores written for MarginMSE are the teacher's, as in GPL's pseudo-labelling.
    """

    def __init__(self, base: Retriever, reranker: Reranker, query_texts: Sequence[str], doc_texts: Sequence[str]):
        super().__init__(base, reranker, query_texts, doc_texts, depth=1)
        self.name = f"{base.name}+scorer:{reranker.path.name}"

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, rows = self.base.search(query_rows, k)
        scores = np.zeros(rows.shape, dtype=np.float32)
        q, column = np.nonzero(rows >= 0)
        scores[q, column] = self.pair_scores(np.asarray(query_rows)[q], rows[q, column])
        return scores, rows
