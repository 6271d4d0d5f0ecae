"""What the endpoints do, apart from HTTP: check a request, queue it for a batch, shape the answer.

:class:`Service` joins the :class:`~embedtune.serve.registry.IndexRegistry` (which index, at which
generation) and the :class:`~embedtune.serve.batcher.MicroBatcher` (when the model runs). A batch of
search requests with the same index and resolved settings is one :meth:`~embedtune.retrieval.Searcher.search`
call for all their queries at the largest k asked, cut to each request's own k and ``min_score``
afterwards, so the service answers exactly what ``embedtune search`` answers for each query.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from embedtune.serve.batcher import MicroBatcher
from embedtune.serve.config import ServeSettings
from embedtune.serve.metrics import Metrics
from embedtune.serve.registry import IndexRegistry, Served
from embedtune.serve.schemas import (
    EMBED_SCHEMA,
    SEARCH_SCHEMA,
    EmbedRequest,
    RequestError,
    SearchRequest,
    check_k,
    check_texts,
    search_settings,
)


class Service:
    def __init__(self, registry: IndexRegistry, settings: ServeSettings, metrics: Metrics):
        self.registry, self.settings, self.metrics = registry, settings, metrics
        self.batcher = MicroBatcher(
            self._run, max_batch=settings.max_batch, wait_ms=settings.batch_wait_ms, on_batch=metrics.observe_batch
        )

    def start(self) -> None:
        self.batcher.start()
        self.registry.start()

    def stop(self) -> None:
        self.registry.stop()
        self.batcher.stop()

    def served(self, name: str | None) -> Served:
        served = self.registry.get(name)
        if served is None:
            raise RequestError(404, f"no index '{name}' is served here (served: {', '.join(self.registry.names)})")
        return served

    async def search(self, request: SearchRequest) -> dict[str, Any]:
        texts = request.texts()
        check_texts(texts, self.settings)
        check_k(request.k, self.settings)
        searcher = self.served(request.index).searcher
        reranker = searcher.reranker.path if searcher.reranker is not None else None
        settings = search_settings(request, reranker)
        settings.check_k(request.k)
        plan = searcher.plan(settings)  # resolved once, refused now rather than in a batch; the batch key
        hits = await self.batcher.run(("search", searcher.index.name, plan), (texts, request.k), size=len(texts))
        results = []
        for text, query_hits in zip(texts, hits, strict=True):
            kept = [h for h in query_hits[: request.k] if request.min_score is None or h.score >= request.min_score]
            results.append({"query": text, "hits": [h.to_json() for h in kept]})
        return {
            "schema": SEARCH_SCHEMA,
            "index": searcher.index.name,
            "mode": plan.mode,
            "reranked": plan.rerank is not None,
            "results": results,
        }

    async def embed(self, request: EmbedRequest) -> dict[str, Any]:
        check_texts(request.texts, self.settings, "text")
        served = self.served(request.index)
        key = ("embed", served.searcher.index.name, request.kind)
        vectors, searcher = await self.batcher.run(key, request.texts, size=len(request.texts))
        encoder = searcher.encoder
        return {
            "schema": EMBED_SCHEMA,
            "index": searcher.index.name,
            "model": searcher.index.manifest.model_path,
            "precision": encoder.precision,
            "backend": encoder.backend,
            "dimension": int(vectors.shape[1]),
            "vectors": vectors.tolist(),
        }

    def indexes(self) -> list[dict[str, Any]]:
        out = []
        for name in self.registry.names:
            served = self.served(name)
            index = served.searcher.index
            out.append(
                {
                    "name": name,
                    "default": name == self.registry.default,
                    "documents": len(index),
                    "generation": index.manifest.generation,
                    "backend": served.searcher.encoder.backend,
                    "describe": dict(index.manifest.describe(index.path)),
                }
                | ({"error": served.error} if served.error else {})
            )
        return out

    # --- on the batcher's thread ----------------------------------------------------------------

    def _run(self, key: Hashable, items: list[Any]) -> list[Any]:
        """One model run for a batch of requests of one key (see the module docstring)."""
        operation, name, extra = key
        searcher = self.served(name).searcher  # the newest generation; held until this batch is answered
        if operation == "embed":
            texts = [text for item in items for text in item]
            index = searcher.index.manifest
            prompt = index.query_prompt_name if extra == "query" else index.document_prompt_name
            vectors = searcher.encoder.encode(texts, show_progress=False, prompt_name=prompt)
            return _split(vectors, [len(item) for item in items], lambda part: (part, searcher))
        texts = [text for item_texts, _ in items for text in item_texts]
        k = min(max(item_k for _, item_k in items), len(searcher.index)) or 1
        hits = searcher.search(texts, k, settings=extra)
        return _split(hits, [len(item_texts) for item_texts, _ in items], lambda part: part)


def _split(rows: Any, sizes: list[int], wrap) -> list[Any]:
    out, start = [], 0
    for size in sizes:
        out.append(wrap(rows[start : start + size]))
        start += size
    return out
