"""Exact dense retrieval: top-k by inner product over normalised vectors (= cosine), in blocks of queries.

The search every consumer of embeddings gets (mining, evaluation of a model): candidates from one
matrix product per block of queries, in bf16 where the hardware runs it natively, rescored in fp32,
so the returned scores are exact; or strictly fp32 throughout. A block's scores are bounded, so
memory is the vectors plus a few hundred MB, whatever the corpus size or the number of queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.retrieval.base import RetrievalInput

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedtune.encoding import EncodeSettings
    from embedtune.index import Index

_SEARCH_CELLS = 1 << 26  # dense scores held at once (128 MiB in bf16)
_RESCORE_CELLS = 1 << 22  # gathered vector values held at once while rescoring in fp32 (16 MiB)
RESCORE_EXTRA = 16  # candidates fetched beyond k by a bf16 search, then rescored in fp32


class DenseRetriever:
    """Exact top-k by inner product over normalised vectors (= cosine), a block of queries at a time.

    ``precision``: ``"bf16"`` finds candidates by a bf16 matrix product (on AMX / bf16 GPUs several
    times faster than FAISS's fp32 brute force: see ``benchmarks/results/mining_scale.md``),
    over-fetching ``RESCORE_EXTRA`` candidates that are then rescored in fp32 and re-sorted, so the
    returned scores (used by mining's margins, written for distillation, scored by evaluation) are
    exact and only a document whose bf16 score error exceeds the gap to the k-th candidate can be
    missed; ``"fp32"`` searches strictly in fp32; ``"auto"`` is bf16 where the CPU has bf16 arithmetic
    (AMX or AVX512-BF16), else fp32.
    """

    def __init__(
        self, doc_vectors: np.ndarray, query_vectors: np.ndarray, name: str = "dense", precision: str = "auto"
    ) -> None:
        import torch

        from embedtune.encoding import cpu_has_bf16

        self.doc_vectors = np.ascontiguousarray(doc_vectors, dtype=np.float32)
        self.query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        self.name = name
        self.encoded_in: str | None = None  # the encoder's precision, when :meth:`encode` made the vectors
        # The search runs on the CPU: bf16 where asked for or where auto means it, fp32 for the rest.
        bf16 = precision == "bf16" or (precision == "auto" and cpu_has_bf16())
        self.precision = "bf16" if bf16 else "fp32"
        self._dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self._search_docs = torch.from_numpy(self.doc_vectors).to(self._dtype)  # no copy when fp32

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

    @classmethod
    def from_index(cls, index: Index, data: RetrievalInput, *, show_progress: bool = True) -> DenseRetriever:
        """Search a built embedtune index's stored vectors exactly, with its own model for the queries.

        Saves re-encoding the corpus; the index must hold exactly the corpus of ``data``, in its order.
        """
        from embedtune.index import Searcher

        if index.doc_ids != data.doc_ids:
            raise EmbedtuneError(
                f"index '{index.name}' holds {len(index)} documents, not the {len(data.doc_ids)} of the mining "
                "corpus in the same order; build it from this corpus, or encode the corpus with a model"
            )
        try:
            docs = index.faiss_index.reconstruct_n(0, index.faiss_index.ntotal)
        except RuntimeError as e:
            raise EmbedtuneError(
                f"index '{index.name}' cannot return its vectors (its FAISS type compresses them); "
                "encode the corpus with a model instead"
            ) from e
        searcher = Searcher(index)
        queries = searcher.encode_queries(data.query_texts, show_progress=show_progress)
        return cls(docs, queries, f"dense:index:{index.name}", searcher.encoder.precision)

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        n_docs, dim = self.doc_vectors.shape
        fetch = min(n_docs, k + (RESCORE_EXTRA if self.precision == "bf16" else 0))
        queries = torch.from_numpy(self.query_vectors[query_rows]).to(self._dtype)
        step = max(1, _SEARCH_CELLS // n_docs)
        with torch.inference_mode():
            found = [
                torch.topk(queries[s : s + step] @ self._search_docs.T, fetch, dim=1).indices
                for s in range(0, len(queries), step)
            ]
        rows = torch.cat(found).numpy()
        scores = np.empty(rows.shape, dtype=np.float32)
        step = max(1, _RESCORE_CELLS // (fetch * dim))
        for s in range(0, len(rows), step):
            block = self.query_vectors[query_rows[s : s + step]]
            scores[s : s + step] = np.einsum("qd,qkd->qk", block, self.doc_vectors[rows[s : s + step]])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def pair_scores(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.query_vectors[query_rows], self.doc_vectors[doc_rows])
