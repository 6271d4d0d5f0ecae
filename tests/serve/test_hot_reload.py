"""An index updated by ``index add``/``index remove`` is served at its new generation without a restart,
and no request in flight fails meanwhile."""

from __future__ import annotations

import json
import threading
import time

from helpers import run
from http_client import call


def _wait_for_generation(base: str, generation: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while call(base, "/health")[1]["indexes"]["tiny"] != generation:
        assert time.monotonic() < deadline, "the new generation was not picked up"
        time.sleep(0.05)


def test_add_and_remove_are_picked_up_while_requests_run(serve, indexes_dir, tmp_path):
    base = serve()
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:  # bounded: stops when told, or after 2,000 requests
        for _ in range(2000):
            if stop.is_set():
                return
            statuses.append(call(base, "/search", {"queries": ["web server", "database"], "k": 3})[0])

    clients = [threading.Thread(target=hammer) for _ in range(3)]
    for client in clients:
        client.start()
    extra = tmp_path / "extra.jsonl"
    text = "Zstandard is a fast lossless compression algorithm with a zstd command line tool."
    extra.write_text(json.dumps({"_id": "zstd", "text": text}) + "\n")
    try:
        run("index", "add", "tiny", "--corpus", extra, "--indexes-dir", indexes_dir, "-q")
        _wait_for_generation(base, 2)
        status, found, _ = call(base, "/search", {"query": text, "k": 1})
        assert status == 200 and found["results"][0]["hits"][0]["id"] == "zstd"
        assert call(base, "/indexes")[1]["indexes"][0]["documents"] == 9

        run("index", "remove", "tiny", "zstd", "--indexes-dir", indexes_dir, "-q")
        _wait_for_generation(base, 3)
        status, found, _ = call(base, "/search", {"query": text, "k": 9})
        assert status == 200 and "zstd" not in [h["id"] for h in found["results"][0]["hits"]]
    finally:
        stop.set()
        for client in clients:
            client.join(60)
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests: {sorted(set(statuses))}"


def test_a_damaged_update_keeps_the_previous_generation_serving(serve, indexes_dir):
    base = serve()
    manifest = indexes_dir / "tiny" / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["generation"] = 7  # names files that do not exist
    manifest.write_text(json.dumps(raw))
    deadline = time.monotonic() + 30
    while not call(base, "/health")[1]["errors"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    health = call(base, "/health")[1]
    assert health["indexes"] == {"tiny": 1} and "tiny" in health["errors"]
    assert call(base, "/search", {"query": "web server", "k": 1})[0] == 200
