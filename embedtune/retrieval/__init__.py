"""One way to rank a corpus: the :class:`Retriever` contract and its dense, BM25 and index-backed kinds.

Mining and evaluation (and later hybrid search and the service) rank through this package only.
"""

from embedtune.retrieval.base import RetrievalInput, Retriever
from embedtune.retrieval.bm25 import BM25, BM25Retriever
from embedtune.retrieval.dense import DenseRetriever
from embedtune.retrieval.index import IndexRetriever

__all__ = ["BM25", "BM25Retriever", "DenseRetriever", "IndexRetriever", "RetrievalInput", "Retriever"]
