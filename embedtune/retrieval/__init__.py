"""One way to rank a corpus: the :class:`Retriever` contract, its dense and BM25 kinds, and :class:`Searcher`.

Mining, evaluation, search, calibration and the service rank through this package only; a built
index is ranked by :class:`Searcher` alone (:mod:`embedtune.retrieval.searcher`).
"""

from embedtune.retrieval.base import RetrievalInput, Retriever
from embedtune.retrieval.bm25 import BM25, BM25Retriever
from embedtune.retrieval.dense import DenseRetriever
from embedtune.retrieval.fusion import FUSIONS, fuse
from embedtune.retrieval.rerank import Reranker, RerankRetriever, ScorerRetriever
from embedtune.retrieval.searcher import MODES, Hit, IndexRetriever, Searcher, SearchPlan, SearchSettings, check_queries

__all__ = [
    "BM25",
    "FUSIONS",
    "MODES",
    "BM25Retriever",
    "DenseRetriever",
    "Hit",
    "IndexRetriever",
    "RerankRetriever",
    "Reranker",
    "RetrievalInput",
    "Retriever",
    "ScorerRetriever",
    "SearchPlan",
    "SearchSettings",
    "Searcher",
    "check_queries",
    "fuse",
]
