"""The request bodies of ``/search`` and ``/embed``, and the JSON the service answers with.

Requests are pydantic models that forbid unknown fields, so a misspelt option (``top_k`` for ``k``)
is a 422 naming it rather than a silently ignored setting. They are strict, like the settings
(:mod:`embedtune.settings`): a value is taken as sent or refused, never coerced, so ``"k": true`` is
not k = 1 and ``"rerank": 1`` is not a yes; and a number must be finite (JSON's ``NaN``, which
Python's parser reads, would otherwise be told it is out of range). The limits that are settings of the
service (largest k, most texts, longest text) are checked by :func:`check_texts` and
:func:`check_k` against :class:`~embedtune.serve.config.ServeSettings`, before a request is queued
for a batch, so one bad request can never fail the others batched with it.

:class:`SearchOptions` is generated from :class:`~embedtune.retrieval.SearchSettings` (mode, fusion,
depths, ANN knobs: their help, choices and bounds), so a search option is declared once for the CLI,
the YAML, the Python API and the service; only ``rerank`` differs (a yes/no for the service's own
cross-encoder, never a path a request could choose). The resolved settings are a request's batch
key, so requests are batched only with requests asking the same.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from embedtune.errors import EmbedtuneError
from embedtune.retrieval import SearchSettings, check_queries
from embedtune.serve.config import ServeSettings
from embedtune.settings import field_type, meta

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


def _options_of(cls: type, skip: tuple[str, ...]) -> dict[str, Any]:
    """Request fields generated from the settings dataclass ``cls``: its help, choices and bounds, each
    optional (None = the index's calibrated default), so the service cannot drift from ``search``."""
    fields = {}
    for f in dataclasses.fields(cls):
        m = meta(f)
        if f.name in skip or m is None:
            continue
        kind = Literal[m.choices] if m.choices else field_type(cls, f.name)[0]  # type: ignore[valid-type]
        bounds = {"ge": m.min, "le": m.max, "gt": m.above, "lt": m.below}
        fields[f.name] = (
            kind | None,
            Field(None, description=m.help, **{k: v for k, v in bounds.items() if v is not None}),
        )
    return fields


SearchOptions = create_model(
    "SearchOptions",
    __config__=REQUEST_CONFIG,
    __doc__="How to search: the fields of :class:`~embedtune.retrieval.SearchSettings` (None = the index's default).",
    **_options_of(SearchSettings, skip=("rerank",)),
    rerank=(bool, Field(False, description="Rescore the top hits with the service's cross-encoder (--rerank).")),
)


def search_settings(options: SearchOptions, reranker: Path | None) -> SearchSettings:
    """A request's options as :class:`SearchSettings`; ``rerank`` names the service's cross-encoder."""
    given = options.model_dump(include=set(SearchOptions.model_fields) - {"rerank"}, exclude_none=True)
    if options.rerank and reranker is None:
        raise RequestError(400, "this service has no cross-encoder for 'rerank': start it with --rerank DIR")
    if "rerank_depth" in given and not options.rerank:
        raise RequestError(422, "'rerank_depth' applies only with 'rerank': true")
    return SearchSettings(**given, rerank=reranker if options.rerank else None)


class SearchRequest(SearchOptions):  # type: ignore[misc, valid-type]
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


def error_json(status: int, message: str) -> dict[str, Any]:
    return {"schema": ERROR_SCHEMA, "error": message, "status": status}
