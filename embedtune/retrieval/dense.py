"""Exact dense retrieval: top-k by inner product over normalised vectors (= cosine), in blocks of queries.

The search every consumer of embeddings gets (mining, evaluation of a model) is
:class:`embedtune.ranking.ExactTopK`, the one exact top-k that training's dev evaluation and index
calibration rank with too: candidates from a bf16 matrix product where the hardware runs it
natively, rescored in fp32, so the returned scores are exact; or strictly fp32 throughout. Memory is
the vectors plus a few hundred MB, whatever the corpus size or the number of queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedtune.ranking import ExactTopK
from embedtune.retrieval.base import RetrievalInput

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedtune.encoding import EncodeSettings


class DenseRetriever:
    """Exact top-k by inner product over normalised vectors (= cosine), a block of queries at a time.

    ``precision``: ``"bf16"`` finds candidates by a bf16 matrix product (on AMX / bf16 GPUs several
    times faster than FAISS's fp32 brute force: see ``benchmarks/results/mining_scale.md``) and
    rescores them in fp32 (:class:`~embedtune.ranking.ExactTopK`), so the returned scores (used by
    mining's margins, written for distillation, scored by evaluation) are exact and only a document
    whose bf16 score error exceeds the gap to the k-th candidate can be missed; ``"fp32"`` searches
    strictly in fp32; ``"auto"`` is bf16 where the CPU has bf16 arithmetic (AMX or AVX512-BF16), else
    fp32. Equal scores are ordered by corpus row.
    """

    def __init__(
        self, doc_vectors: np.ndarray, query_vectors: np.ndarray, name: str = "dense", precision: str = "auto"
    ) -> None:
        from embedtune.encoding import cpu_has_bf16

        self.doc_vectors = np.ascontiguousarray(doc_vectors, dtype=np.float32)
        self.query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        self.name = name
        self.encoded_in: str | None = None  # the encoder's precision, when :meth:`encode` made the vectors
        # The search runs on the CPU: bf16 where asked for or where auto means it, fp32 for the rest.
        bf16 = precision == "bf16" or (precision == "auto" and cpu_has_bf16())
        self.precision = "bf16" if bf16 else "fp32"
        self._top_k = ExactTopK(self.doc_vectors, self.precision)  # the bf16 copy made once, here

    @classmethod
    def encode(
        cls,
        model: str | Path | SentenceTransformer | None,
        data: RetrievalInput,
        encoding: EncodeSettings | None = None,
        *,
        name: str | None = None,
        show_progress: bool = True,
    ) -> DenseRetriever:
        """Encode the corpus and the queries with ``model`` (a path, ``"default"`` or a loaded model).

        ``encoding`` says how (precision, batch size, token limit, and whether the encoding cache spares
        re-encoding a corpus this model has encoded before); the search runs in the encoder's precision.
        The progress bars are labelled with ``name`` (``encoding corpus (default)``).
        """
        from embedtune.encoding import EncodeSettings, make_encoder, prompt_names
        from embedtune.models import load_model, resolve_model_path

        encoding = encoding or EncodeSettings()
        if model is None or isinstance(model, (str, Path)):
            name = name or f"dense:{model or 'default'}"
            model = load_model(resolve_model_path(model), max_seq_length=encoding.max_seq_length)
        else:
            name = name or "dense:model"
            if encoding.max_seq_length is not None:
                model.max_seq_length = encoding.max_seq_length
        workload = len(data.doc_texts) + len(data.query_texts)
        encoder = make_encoder(
            model, encoding.precision, backend=encoding.backend, workload=workload, cache=encoding.cache
        )
        query_prompt, document_prompt = prompt_names(model)
        batch = {"batch_size": encoding.batch_size, "show_progress": show_progress}
        label = name.removeprefix("dense:")
        docs = encoder.encode(data.doc_texts, prompt_name=document_prompt, desc=f"encoding corpus ({label})", **batch)
        queries = encoder.encode(
            data.query_texts, prompt_name=query_prompt, desc=f"encoding queries ({label})", **batch
        )
        retriever = cls(docs, queries, name, encoder.precision)
        retriever.encoded_in = encoder.precision
        return retriever

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._top_k.search(self.query_vectors[query_rows], k)

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.query_vectors[query_rows], self.doc_vectors[doc_rows])
