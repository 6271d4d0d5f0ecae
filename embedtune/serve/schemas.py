"""The request bodies of ``/search`` and ``/embed``, and the JSON the service answers with.

Requests are pydantic models that forbid unknown fields, so a misspelt option (``top_k`` for ``k``)
is a 422 naming it rather than a silently ignored setting. They are strict, like the settings
(:mod:`embedtune.settings`): a value is taken as sent or refused, never coerced, so ``"k": true`` is
not k = 1 and ``"rerank": 1`` is not a yes; and a number must be finite (JSON's ``NaN``, which
Python's parser reads, would otherwise be told it is out of range). The limits that are settings of the
service (largest k, most texts, longest text) are checked by :func:`check_texts` and
:func:`check_k` against :class:`~embedtune.serve.config.ServeSettings`, before a request is queued
for a batch, so one bad request can never fail the others batched with it.

:class:`SearchOptions` holds the options handed through to :meth:`embedtune.retrieval.HybridSearcher.search`
(the FAISS knobs) and as its :class:`~embedtune.retrieval.SearchSettings` (mode, fusion, reranking);
a request's options are also its batch key, so requests are batched only with requests asking the same.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from embedtune.errors import EmbedtuneError
from embedtune.index.search import Hit, check_queries
from embedtune.serve.config import ServeSettings

SEARCH_SCHEMA = "embedtune.serve.search/1"
EMBED_SCHEMA = "embedtune.serve.embed/1"
ERROR_SCHEMA = "embedtune.error/1"


class RequestError(EmbedtuneError):
    """A request the service refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# An int passes for a float (JSON has one number type), nothing else is converted.
REQUEST_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class SearchOptions(BaseModel):
    """Options passed to ``Searcher.search`` unchanged (None = the index's calibrated default)."""

    model_config = REQUEST_CONFIG

    nprobe: int | None = Field(None, ge=1, le=1 << 16, description="IVF cells to scan (IVF indexes only).")
    ef_search: int | None = Field(None, ge=1, le=1 << 16, description="HNSW beam width (HNSW indexes only).")
    mode: Literal["dense", "bm25", "hybrid"] | None = Field(
        None, description="dense, bm25 or hybrid (default: the mode the index's calibration chose)."
    )
    fusion: Literal["minmax", "zscore", "rrf"] | None = Field(None, description="How hybrid fuses the two lists.")
    weight: float | None = Field(None, ge=0, le=1, description="Weight of the dense list in hybrid fusion.")
    rerank: bool = Field(False, description="Rescore the top hits with the service's cross-encoder (--rerank).")
    rerank_depth: int | None = Field(None, ge=1, le=1000, description="Hits rescored when reranking (at least k).")

    def search_kwargs(self) -> dict[str, Any]:
        return self.model_dump(include=set(SearchOptions.model_fields), exclude_none=True)


class SearchRequest(SearchOptions):
    """One query (``query``) or a batch (``queries``) against one served index."""

    query: str | None = Field(None, description="One query (or give 'queries').")
    queries: list[str] | None = Field(None, description="Several queries, answered in order.")
    k: int = Field(10, description="Hits per query (at most the service's max_k).")
    min_score: float | None = Field(None, ge=-1.5, le=1.5, description="Leave out hits scoring below this.")
    index: str | None = Field(None, description="Name of a served index (default: the first one served).")

    def texts(self) -> list[str]:
        if (self.query is None) == (self.queries is None):
            raise RequestError(422, "give either 'query' or 'queries'")
        return [self.query] if self.query is not None else list(self.queries or [])


class EmbedRequest(BaseModel):
    """Texts to turn into vectors with a served index's model, precision and prompt."""

    model_config = REQUEST_CONFIG

    texts: list[str] = Field(description="Texts to encode.")
    kind: Literal["query", "document"] = Field("query", description="Which of the index's prompts to prepend.")
    index: str | None = Field(None, description="Name of a served index (default: the first one served).")


def check_texts(texts: list[str], settings: ServeSettings, what: str = "query") -> None:
    """Refuse no texts, too many, a too long one, and empty or invalid ones (``check_queries``'s rules)."""
    if not texts:
        raise RequestError(422, f"no {what} given")
    if len(texts) > settings.max_texts:
        raise RequestError(422, f"{len(texts)} texts in one request; at most {settings.max_texts} (max_texts)")
    for i, text in enumerate(texts, start=1):
        if len(text) > settings.max_text_chars:
            which = f"{what} {i}" if len(texts) > 1 else f"the {what}"
            raise RequestError(
                422, f"{which} is {len(text)} characters long; at most {settings.max_text_chars} (max_text_chars)"
            )
    try:
        check_queries(texts)
    except EmbedtuneError as e:
        raise RequestError(422, str(e).replace("query", what)) from e


def check_k(k: int, settings: ServeSettings) -> None:
    if not 1 <= k <= settings.max_k:
        raise RequestError(422, f"k must be between 1 and {settings.max_k} (max_k), got {k}")


def hit_json(hit: Hit) -> dict[str, Any]:
    """A hit as ``embedtune search --json`` prints it."""
    out = {"rank": hit.rank, "id": hit.doc_id, "score": round(hit.score, 6), "text": hit.text}
    return out | ({"metadata": hit.metadata} if hit.metadata else {})


def error_json(status: int, message: str) -> dict[str, Any]:
    return {"schema": ERROR_SCHEMA, "error": message, "status": status}
