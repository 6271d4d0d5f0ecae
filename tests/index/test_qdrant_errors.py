"""What goes wrong around a Qdrant collection is one line: a server that does not answer, a mode it cannot serve.

The collection lives in Qdrant's local mode (a folder, no server), as in ``test_qdrant.py``; the server
that does not answer is a closed port on the loopback, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import socket

import pytest
from helpers import QUERIES, assert_one_line_error, run

from embedtune.encoding import EncodeSettings
from embedtune.errors import EmbedtuneError
from embedtune.index import Index, build_index
from embedtune.index.export import export_index

pytest.importorskip("qdrant_client")


@pytest.fixture
def indexes_dir(tmp_path, tiny_st, beir_dir):
    """``tiny``, with its BM25 side (the default), so that its own manifest offers bm25 and hybrid."""
    folder = tmp_path / "idx"
    build_index(beir_dir, "tiny", model=tiny_st, encode=EncodeSettings(precision="fp32"), indexes_dir=folder,
                show_progress=False)  # fmt: skip
    return folder


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_export_to_a_qdrant_that_does_not_answer_is_one_line(indexes_dir):
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(EmbedtuneError, match=rf"^{url}: Qdrant does not answer \(.*refused.*\); start it"):
        export_index("tiny", url=url, indexes_dir=indexes_dir)
    args = ("index", "export", "tiny", "--indexes-dir", indexes_dir, "--url", url)
    result = run(*args, ok=False)
    assert result.exit_code == 1
    assert_one_line_error(result, rf"{url}: Qdrant does not answer .*; start it or check the url")
    result = run(*args, "--json", ok=False)
    error = json.loads(result.stdout)
    assert result.exit_code == 1 and error["schema"] == "embedtune.error/1" and error["exit_code"] == 1
    assert error["error"].startswith(f"{url}: Qdrant does not answer")
    assert "Traceback" not in result.output


def test_a_collection_searches_in_dense_mode_only(tmp_path, indexes_dir):
    uri = export_index("tiny", path=tmp_path / "qdrant", indexes_dir=indexes_dir).uri
    query = QUERIES["q-ssh"]
    for mode in ("bm25", "hybrid"):
        assert_one_line_error(
            run("search", query, "--index", uri, "--mode", mode, ok=False),
            "has no BM25 side.*holds the vectors only; search it in dense mode",
        )
    dense = json.loads(run("search", query, "--index", uri, "--mode", "dense", "--json", "-k", 3).stdout)
    default = json.loads(run("search", query, "--index", uri, "--json", "-k", 3).stdout)
    assert len(dense["hits"]) == 3 and default["hits"] == dense["hits"]
    index = Index.load(uri)
    try:
        assert not index.has_bm25 and index.manifest.default_mode == "dense"
    finally:
        index.close()
