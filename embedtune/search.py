"""Top-k search over an index with the index's own model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedtune.encoding import Encoder
from embedtune.index import DEFAULT_INDEXES_DIR, Index
from embedtune.models import load_model


@dataclass(frozen=True)
class Hit:
    rank: int
    doc_id: str
    score: float
    text: str


class Searcher:
    """An index plus the model that built it, loaded once for any number of queries.

    ``model`` overrides where the model is loaded from (the index may have moved machines); it must
    still be byte-identical to the one that built the index, else it is refused.
    """

    def __init__(self, index: Index, model: str | Path | None = None, *, device: str | None = None):
        self.index = index
        manifest = index.manifest
        model = load_model(index.check_model(model), device=device, max_seq_length=manifest.max_seq_length)
        self.encoder = Encoder(model, manifest.precision)

    @classmethod
    def open(
        cls, index: str | Path, *, indexes_dir: Path = DEFAULT_INDEXES_DIR, model: str | Path | None = None
    ) -> Searcher:
        return cls(Index.load(index, indexes_dir), model)

    def search(self, queries: list[str], k: int = 10, *, show_progress: bool = False) -> list[list[Hit]]:
        """The top-``k`` hits for each query, best first."""
        vectors = self.encoder.encode(queries, role="query", show_progress=show_progress)
        scores, rows = self.index.search_vectors(vectors, k)
        return [
            [
                Hit(rank, self.index.doc_ids[row], float(score), self.index.texts[row])
                for rank, (score, row) in enumerate(zip(q_scores, q_rows, strict=True), start=1)
                if row >= 0
            ]
            for q_scores, q_rows in zip(scores, rows, strict=True)
        ]
