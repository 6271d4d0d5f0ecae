"""FAISS indexes that remember the model and corpus they were made from: build, update, load, search.

One module per concern:

* :mod:`~embedtune.index.types` — the FAISS index types, the automatic choice, :class:`BuildSettings`;
* :mod:`~embedtune.index.knobs` — the search knob calibrated to a recall of exact search (query-like
  probes at build time, real queries by :mod:`embedtune.retrieval.calibration`);
* :mod:`~embedtune.index.manifest` — the manifest that names an index's files and says what it is;
* :mod:`~embedtune.index.store` — the SQLite document store beside the vectors;
* :mod:`~embedtune.index.lexical` — BM25 over the stored texts, saved beside the vectors (lexical search);
* :mod:`~embedtune.index.generations` — the write transaction (a crash leaves the old or the new index);
* :mod:`~embedtune.index.ingest` — storing and encoding a corpus a chunk at a time (build and update);
* :mod:`~embedtune.index.build`, :mod:`~embedtune.index.update` — writing an index, changing one;
* :mod:`~embedtune.index.index` — loading and cross-checking an index, listing indexes;
* :mod:`~embedtune.index.shards`, :mod:`~embedtune.index.merge` — one shard of a corpus encoded per
  process, and the index built from the shards; :mod:`~embedtune.index.ray_shards` — all shards on Ray;
* :mod:`~embedtune.index.qdrant`, :mod:`~embedtune.index.export` — an index exported to a Qdrant
  collection, loaded by :meth:`Index.load <embedtune.index.index.Index.load>` from a ``qdrant://`` URI.

Ranking an index (dense, BM25, fusion, reranking) is retrieval's: :class:`embedtune.retrieval.Searcher`.

The names below are the public API; import them from here.
"""

from embedtune.index.build import build_index
from embedtune.index.export import ExportResult, export_index
from embedtune.index.index import Index, list_indexes, resolve_index_path
from embedtune.index.manifest import DEFAULT_INDEXES_DIR, MANIFEST_FILE, Manifest
from embedtune.index.merge import merge_shards
from embedtune.index.ray_shards import build_with_ray
from embedtune.index.shards import ShardRecord, ShardSettings, encode_shard
from embedtune.index.types import DEFAULT_TARGET_RECALL, INDEX_TYPES, BuildSettings, IndexSpec
from embedtune.index.update import UpdateResult, add_documents, remove_documents

__all__ = [
    "DEFAULT_INDEXES_DIR",
    "DEFAULT_TARGET_RECALL",
    "INDEX_TYPES",
    "MANIFEST_FILE",
    "BuildSettings",
    "ExportResult",
    "Index",
    "IndexSpec",
    "Manifest",
    "ShardRecord",
    "ShardSettings",
    "UpdateResult",
    "add_documents",
    "build_index",
    "build_with_ray",
    "encode_shard",
    "export_index",
    "list_indexes",
    "merge_shards",
    "remove_documents",
    "resolve_index_path",
]
