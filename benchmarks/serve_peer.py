"""The peer of ``serve_load.py``: the search endpoint a tutorial writes, FastAPI + sentence-transformers + FAISS.

Each request's one query is encoded alone (``SentenceTransformer.encode``) and searched in the same
FAISS file the service reads; the endpoint is a plain ``def``, so FastAPI runs requests on its thread
pool. Same model and token limit as the index. Run by ``serve_load.py``::

    python benchmarks/serve_peer.py indexes/debian-8k 8001
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def peer_app(index_dir: Path):
    """FastAPI + sentence-transformers + FAISS, as a tutorial writes it: encode each request's query, search."""
    import sqlite3

    import faiss
    from fastapi import FastAPI
    from pydantic import BaseModel
    from sentence_transformers import SentenceTransformer

    from embedtune.models import default_model_path

    manifest = json.loads((index_dir / "manifest.json").read_text())
    model = SentenceTransformer(str(default_model_path()), device="cpu")
    model.max_seq_length = manifest["max_seq_length"]
    index = faiss.read_index(str(index_dir / f"index.{manifest['generation']}.faiss"))
    db = sqlite3.connect(index_dir / f"docs.{manifest['generation']}.sqlite", check_same_thread=False)
    docs = {fid: (doc_id, text) for fid, doc_id, text in db.execute("SELECT fid, doc_id, text FROM docs")}
    app = FastAPI()

    class Query(BaseModel):
        query: str
        k: int = 10

    @app.get("/health")
    def health():
        return {"status": "ok"}

    def search(q: Query) -> dict:
        vector = model.encode([q.query], normalize_embeddings=True)
        scores, ids = index.search(vector, q.k)
        hits = [
            {"id": docs[int(i)][0], "score": float(s), "text": docs[int(i)][1]}
            for s, i in zip(scores[0], ids[0], strict=True)
            if i >= 0
        ]
        return {"results": [{"query": q.query, "hits": hits}]}

    search.__annotations__ = {"q": Query, "return": dict}  # this module's annotations are strings
    app.post("/search")(search)
    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(peer_app(Path(sys.argv[1])), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
