"""Export to Qdrant's local mode: the same top-k as the FAISS index, searched through the Index seam."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CORPUS, QUERIES

from embedtune.encoding import EncodeSettings
from embedtune.errors import EmbedtuneError
from embedtune.index import Index, build_index
from embedtune.index.export import export_index
from embedtune.index.qdrant import MANIFEST_KEY, parse_uri
from embedtune.retrieval import Searcher

pytest.importorskip("qdrant_client")


@pytest.fixture
def exported(tmp_path, tiny_st, beir_dir):
    idx = tmp_path / "idx"
    build_index(beir_dir, "tiny", model=tiny_st, encode=EncodeSettings(precision="fp32"), indexes_dir=idx,
                show_progress=False)  # fmt: skip
    result = export_index("tiny", path=tmp_path / "qdrant", indexes_dir=idx)
    return idx, result


def test_export_then_search_gives_the_faiss_top_k(exported):
    idx, result = exported
    assert result.count == len(CORPUS) and result.uri.endswith("?collection=tiny")
    queries = list(QUERIES.values())
    faiss_hits = Searcher.open("tiny", indexes_dir=idx).search(queries, k=5)
    searcher = Searcher.open(result.uri)
    qdrant_hits = searcher.search(queries, k=5)
    assert [[h.doc_id for h in q] for q in qdrant_hits] == [[h.doc_id for h in q] for q in faiss_hits]
    np.testing.assert_allclose(
        [[h.score for h in q] for q in qdrant_hits], [[h.score for h in q] for q in faiss_hits], atol=1e-5
    )
    assert qdrant_hits[0][0].text == CORPUS[qdrant_hits[0][0].doc_id]
    index = searcher.index
    assert index.doc_ids == list(CORPUS) and len(index) == len(CORPUS)
    assert index.manifest.model_fingerprint == Index.load("tiny", idx).manifest.model_fingerprint
    rows = index.row_map(["openssh", "nope", "nginx"])
    assert rows[0] == 2 and rows[4] == 0 and (rows >= 0).sum() == 2
    searcher.index.close()


def test_a_collection_is_refused_with_another_model(exported, tiny_bert):
    _, result = exported
    with pytest.raises(EmbedtuneError, match=r"index 'qdrant:tiny' was built by the model at .* fingerprint"):
        Searcher(Index.load(result.uri), model=tiny_bert)


def test_an_unfinished_or_foreign_collection_is_refused(tmp_path, exported):
    _, result = exported
    where = parse_uri(result.uri)
    client = where.client()
    client.update_collection(where.collection, metadata={MANIFEST_KEY: "garbage"})
    client.create_collection("other", vectors_config=None)
    client.close()
    with pytest.raises(EmbedtuneError, match="unreadable index manifest"):
        Index.load(result.uri)
    with pytest.raises(EmbedtuneError, match="holds no embedtune manifest"):
        Index.load(result.uri.replace("collection=tiny", "collection=other"))
    with pytest.raises(EmbedtuneError, match="no such Qdrant collection"):
        Index.load(result.uri.replace("collection=tiny", "collection=nope"))
    with pytest.raises(EmbedtuneError, match="local mode is qdrant:///ABSOLUTE/PATH"):
        Index.load("qdrant://")


def test_an_existing_collection_is_replaced_only_with_overwrite(tmp_path, exported):
    idx, _ = exported
    with pytest.raises(EmbedtuneError, match="collection already exists"):
        export_index("tiny", path=tmp_path / "qdrant", indexes_dir=idx)
    assert export_index("tiny", path=tmp_path / "qdrant", indexes_dir=idx, overwrite=True).count == len(CORPUS)
    assert parse_uri("qdrant://localhost:6333/docs").url == "http://localhost:6333"
