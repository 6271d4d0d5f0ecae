"""One way to rank a corpus: the :class:`Retriever` contract and its dense, BM25, index-backed and hybrid kinds.

Mining, evaluation, search and (later) the service rank through this package only.
"""

from embedtune.retrieval.base import RetrievalInput, Retriever
from embedtune.retrieval.bm25 import BM25, BM25Retriever
from embedtune.retrieval.dense import DenseRetriever
from embedtune.retrieval.fusion import FUSIONS, fuse
from embedtune.retrieval.hybrid import MODES, HybridRetriever, LexicalIndexRetriever, SearchSettings, index_retriever
from embedtune.retrieval.index import IndexRetriever
from embedtune.retrieval.rerank import Reranker, RerankRetriever, ScorerRetriever
from embedtune.retrieval.search import HybridSearcher

__all__ = [
    "BM25",
    "FUSIONS",
    "MODES",
    "BM25Retriever",
    "DenseRetriever",
    "HybridRetriever",
    "HybridSearcher",
    "IndexRetriever",
    "LexicalIndexRetriever",
    "RerankRetriever",
    "Reranker",
    "RetrievalInput",
    "Retriever",
    "ScorerRetriever",
    "SearchSettings",
    "fuse",
    "index_retriever",
]
