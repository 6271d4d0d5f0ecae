"""Top-k search over an index with the index's own model: texts in, hits (id, score, text) out.

The model is loaded through the index's fingerprint check (:meth:`~embedtune.index.reader.Index.check_model`),
so an index is never searched with vectors of another model, and queries are encoded with the
index's query prompt. Row-level callers (retrievers over a corpus held as lists) use
:meth:`Searcher.encode_queries` with :meth:`~embedtune.index.reader.Index.search_rows`.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedtune.encoding import make_encoder
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.index.manifest import DEFAULT_INDEXES_DIR
from embedtune.index.reader import Index
from embedtune.models import load_model
from embedtune.text import text_problem


def check_queries(queries: list[str]) -> None:
    """Refuse an empty or whitespace-only query (it would return arbitrary hits) and one that is not
    valid Unicode text (it cannot be tokenized), naming the query by its position."""
    for i, query in enumerate(queries, start=1):
        problem = text_problem(query) if isinstance(query, str) else f"not a string ({type(query).__name__})"
        if problem is not None:
            which = "the query" if len(queries) == 1 else f"query {i}"
            raise EmbedtuneError(f"{which} is {problem}" if problem == "empty" else f"{which}: {problem}")


@dataclass(frozen=True)
class Hit:
    rank: int
    doc_id: str
    score: float
    text: str
    metadata: dict = field(default_factory=dict)


class Searcher:
    """An index plus the model that built it, loaded once for any number of queries.

    ``model`` overrides where the model is loaded from (the index may have moved machines); it must
    still be byte-identical to the one that built the index, else it is refused. Queries are encoded
    in the index's precision unless ``precision`` says otherwise: vectors of one model agree closely
    across precisions (int8 a little less; ``benchmarks/results/encoding_speed.md``), so e.g. an index
    built in fp32 may be searched in bf16. ``backend`` is what encodes them
    (:func:`~embedtune.encoding.make_encoder`: ``auto`` = OpenVINO when installed, in its own precision).
    """

    def __init__(
        self,
        index: Index,
        model: str | Path | None = None,
        *,
        device: str | None = None,
        precision: str | None = None,
        backend: str = "torch",
    ):
        self.index = index
        manifest = index.manifest
        model = load_model(index.check_model(model), device=device, max_seq_length=manifest.max_seq_length)
        if model.get_embedding_dimension() != manifest.dimension:
            raise EmbedtuneError(
                f"model makes {model.get_embedding_dimension()}-dim vectors, index '{index.name}' holds "
                f"{manifest.dimension}-dim ones; rebuild the index with this model"
            )
        self.encoder = make_encoder(model, precision, backend=backend, fallback=manifest.precision)

    @classmethod
    def open(
        cls,
        index: str | Path,
        *,
        indexes_dir: Path = DEFAULT_INDEXES_DIR,
        model: str | Path | None = None,
        precision: str | None = None,
        backend: str = "torch",
        **options,
    ) -> Searcher:
        """Load ``index`` and its model; ``options`` go to the constructor (a subclass's own settings)."""
        loaded = Index.load(index, indexes_dir)
        try:
            return cls(loaded, model, precision=precision, backend=backend, **options)
        except BaseException:
            loaded.close()  # a refused model leaves no open store (a Qdrant local-mode folder stays locked)
            raise

    def with_index(self, index: Index) -> Searcher:
        """This searcher's loaded encoder over ``index`` (a newer generation of the same index, say),
        without loading the model again; refused unless ``index`` was built by the same model."""
        if index.manifest.model_fingerprint != self.index.manifest.model_fingerprint:
            raise EmbedtuneError(
                f"index '{index.name}' was built by another model (fingerprint "
                f"{index.manifest.model_fingerprint[:12]}, not {self.index.manifest.model_fingerprint[:12]})"
            )
        other = copy.copy(self)
        other.index = index
        return other

    def search(
        self,
        queries: list[str],
        k: int = 10,
        *,
        show_progress: bool = False,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[list[Hit]]:
        """The top-``k`` hits for each query, best first.

        Warns (:class:`~embedtune.errors.EmbedtuneWarning`) when a query is longer than the model's
        token limit (it is truncated, as every encoder does) and when ``k`` exceeds the index size.
        """
        if not queries:
            return []
        self.check(queries, k)
        vectors = self.encode_queries(queries, show_progress=show_progress)
        return self.hits(*self.index.search_vectors(vectors, k, nprobe=nprobe, ef_search=ef_search))

    def check(self, queries: list[str], k: int) -> None:
        """Refuse bad queries; warn of truncated ones and of a ``k`` beyond the index size."""
        check_queries(queries)
        self._warn_truncated(queries)
        if k > len(self.index):
            warnings.warn(
                f"k={k} is larger than index '{self.index.name}' ({len(self.index)} documents); "
                f"returning at most {len(self.index)} hits",
                EmbedtuneWarning,
                stacklevel=3,
            )

    def hits(self, scores: np.ndarray, fids: np.ndarray) -> list[list[Hit]]:
        """Ranked FAISS ids (-1 = none) as hits with the stored documents, per query."""
        docs = self.index.lookup({int(f) for f in fids.ravel() if f >= 0})
        return [
            [
                Hit(rank, docs[fid].doc_id, float(score), docs[fid].text, docs[fid].metadata)
                for rank, (score, fid) in enumerate(
                    ((s, int(f)) for s, f in zip(q_scores, q_fids, strict=True) if f >= 0), start=1
                )
            ]
            for q_scores, q_fids in zip(scores, fids, strict=True)
        ]

    def encode_queries(self, queries: list[str], *, show_progress: bool = False) -> np.ndarray:
        """Query vectors as the index expects them: its model, precision and query prompt."""
        return self.encoder.encode(
            queries,
            show_progress=show_progress,
            prompt_name=self.index.manifest.query_prompt_name,
            desc=f"encoding queries (index:{self.index.name})",
        )

    def _warn_truncated(self, queries: list[str]) -> None:
        limit = self.index.manifest.max_seq_length
        lengths = [len(ids) for ids in self.encoder.model.tokenizer(queries, verbose=False)["input_ids"]]
        long = [(i, n) for i, n in enumerate(lengths, start=1) if n > limit]
        if long:
            i, n = long[0]
            which = f"query {i} is {n} tokens long" if len(long) == 1 else f"{len(long)} queries (e.g. query {i}: {n})"
            warnings.warn(
                f"{which}, over the model's limit of {limit} tokens (special tokens included): "
                f"truncated to the first {limit}",
                EmbedtuneWarning,
                stacklevel=3,
            )
