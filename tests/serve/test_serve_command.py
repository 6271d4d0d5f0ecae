"""``embedtune serve`` as a process: the API key, loopback by default, a clean exit on SIGTERM mid-load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import assert_one_line_error, run
from http_client import call, free_port

ROOT = Path(__file__).resolve().parents[2]


def _start(indexes_dir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "embedtune", "serve", "--index", "tiny", "--indexes-dir", str(indexes_dir),
         "--port", str(port), "--backend", "torch", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.stdout.read()
        try:
            if call(base, "/health", timeout=2)[0] == 200:
                return process, base
        except OSError:
            pass
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.2)


def test_api_key_from_the_environment_and_sigterm_mid_load(indexes_dir):
    key = "s3cret-key"
    process, base = _start(indexes_dir, env={"EMBEDTUNE_API_KEY": key})
    try:
        assert base.startswith("http://127.0.0.1:")
        body = {"query": "web server", "k": 2}
        assert call(base, "/search", body)[:2] == (
            401,
            {
                "schema": "embedtune.error/1",
                "error": "an API key is required (header 'X-API-Key: KEY' or 'Authorization: Bearer KEY')",
                "status": 401,
            },
        )
        assert call(base, "/search", body, headers={"X-API-Key": "s3cret-kez"})[1]["error"] == "wrong API key"
        assert call(base, "/metrics", headers={"Authorization": "Bearer nope"})[0] == 401
        assert call(base, "/search", body, headers={"X-API-Key": key})[0] == 200
        assert call(base, "/search", body, headers={"Authorization": f"Bearer {key}"})[0] == 200
        assert call(base, "/health")[0] == 200 and call(base, "/")[0] == 200  # open: liveness and the page

        statuses: list[int | str] = []

        def client() -> None:  # bounded: 200 requests at most, ends when the service is gone
            for _ in range(200):
                try:
                    statuses.append(call(base, "/search", body, headers={"X-API-Key": key}, timeout=30)[0])
                except OSError as e:
                    statuses.append(type(e).__name__)
                    return

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        for thread in clients:
            thread.join(60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode in (0, -signal.SIGTERM), output  # uvicorn ends by the signal it caught
    assert "Traceback" not in output and "Application shutdown complete" in output
    answered = [s for s in statuses if isinstance(s, int)]
    assert answered and set(answered) == {200}, statuses  # requests either answered or refused a connection


def test_unknown_index_and_bad_setting_are_one_line_errors(indexes_dir):
    assert_one_line_error(run("serve", "--index", "nope", "--indexes-dir", indexes_dir, ok=False), r"no index 'nope'")
    assert_one_line_error(
        run("serve", "--index", "tiny", "--indexes-dir", indexes_dir, "--max-batch", 0, ok=False),
        r"--max-batch \(max_batch: must be at least 1, got 0\)",
    )
    assert_one_line_error(
        run("serve", "--index", "tiny", "--indexes-dir", indexes_dir, "--api-key", " ", ok=False), r"api_key: is empty"
    )
