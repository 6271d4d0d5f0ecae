"""``embedtune serve`` under load, against the obvious peer endpoint and against ``embedtune search``.

One run, one machine, loopback only:

1. the service (``embedtune serve``, default settings: backend auto, micro-batching) over a
   data/debian index of the default model (all-MiniLM-L6-v2, 64-token texts, fp32, as the quick
   start builds it; ``--docs N`` indexes the first N documents, 0 = all);
2. the peer (``serve_peer.py``): a plain FastAPI app written the obvious way (sentence-transformers
   ``encode`` of each request's one query, then a FAISS search over the same index file; a sync
   endpoint, so FastAPI runs requests on its thread pool), same model, same 64 tokens;
3. ``embedtune search --queries FILE`` (one process) for the same queries, and one single-query
   ``embedtune search`` (what a query costs without a service).

Load: C client threads (C = 1, 4, 16, 64), each with its own keep-alive connection, each sending
``POST /search`` (one query, k = 10) back to back, queries drawn in turn from a seeded sample of
data/debian queries; a level ends after ``--requests`` requests or ``--seconds`` seconds, whichever
comes first. Before the levels, every sampled query is sent once (warm-up: first-call costs per input
shape). Reported: p50/p95/p99 of each request's wall time, requests/s, and the server process's CPU
time per request.
Also checked: the service's top-10 ids equal ``embedtune search``'s for the sampled queries; and a
screenshot of the search page (Debian's Chromium through Playwright) is written beside the results::

    nice python benchmarks/serve_load.py                 # 8,192 documents, 300 requests per level
    python benchmarks/serve_load.py --quick              # smoke test: 1,000 documents, 40 requests per level
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine  # noqa: E402

DATA = ROOT / "data" / "debian"
SEED = 13
MAX_SEQ_LENGTH = 64
K = 10


def build_subset_index(docs: int, indexes_dir: Path) -> str:
    """The index ``debian-<docs>`` (first ``docs`` documents; 0 = all), built as the quick start does if missing."""
    import gzip

    from embedtune.encoding import EncodeSettings
    from embedtune.index import build_index

    name = "debian-all" if not docs else f"debian-{docs // 1024}k" if docs % 1024 == 0 else f"debian-{docs}"
    if (indexes_dir / name / "manifest.json").is_file():
        return name
    corpus = DATA
    if docs:
        folder = HERE / ".cache" / name
        folder.mkdir(parents=True, exist_ok=True)
        corpus = folder / "corpus.jsonl"
        with gzip.open(DATA / "corpus.jsonl.gz", "rt", encoding="utf-8") as f, corpus.open("w") as out:
            out.writelines(itertools.islice(f, docs))
    build_index(
        corpus, name, model="default", indexes_dir=indexes_dir,
        encode=EncodeSettings(precision="fp32", max_seq_length=MAX_SEQ_LENGTH), show_progress=True,
    )  # fmt: skip
    return name


def sample_queries(n: int) -> list[str]:
    import gzip

    with gzip.open(DATA / "queries.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return random.Random(SEED).sample(texts, n)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not start")


def post_search(conn: http.client.HTTPConnection, query: str) -> dict:
    conn.request("POST", "/search", json.dumps({"query": query, "k": K}), {"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {body[:200]!r}")
    return json.loads(body)


def load_level(port: int, pid: int, queries: list[str], clients: int, requests: int, seconds: float) -> dict:
    """``clients`` threads sending back to back until ``requests`` are answered or ``seconds`` pass (no warm-up
    here: :func:`run_levels` sends every query once first).

    Besides wall-clock figures, the server process's CPU time per request: on a machine shared with
    other jobs, wall time depends on the share of the CPUs a server wins (more busy threads win more),
    CPU time per request much less."""
    import psutil

    server = psutil.Process(pid)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(10**9))
    stop_at = 0.0  # set after the warm-up

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter)
            if i >= requests:
                break
            started = time.perf_counter()
            try:
                post_search(conn, queries[i % len(queries)])
            except (OSError, RuntimeError) as e:
                errors.append(str(e))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            with lock:
                latencies.append(time.perf_counter() - started)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    stop_at = time.monotonic() + seconds
    cpu_before = sum(server.cpu_times()[:2])
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    ms = sorted(x * 1000 for x in latencies)

    def pct(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 1) if ms else float("nan")

    return {
        "clients": clients,
        "requests": len(ms),
        "errors": len(errors),
        "seconds": round(wall, 2),
        "req_per_s": round(len(ms) / wall, 1),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
        "server_cpu_ms_per_request": round(1000 * cpu / len(ms), 1) if ms else None,
    }


def start(command: list[str], port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_ready(port, process)
    return process


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def run_levels(port: int, pid: int, queries: list[str], levels: list[int], requests: int, seconds: float) -> list[dict]:
    warm = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for query in queries:  # each query once: first-call costs (kernels per input shape) stay out of the levels
        post_search(warm, query)
    warm.close()
    rows = []
    for clients in levels:
        row = load_level(port, pid, queries, clients, requests, seconds)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# --- embedtune search, the page, the report ---------------------------------------------------------


def search_command(index: str, indexes_dir: Path, queries: list[str]) -> dict:
    """``embedtune search --queries`` over all sampled queries in one process, and one single-query search."""
    folder = HERE / ".cache"
    folder.mkdir(exist_ok=True)
    file = folder / "serve_load_queries.txt"
    file.write_text("".join(q.replace("\n", " ") + "\n" for q in queries), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "embedtune", "search", "--index", index, "--indexes-dir", str(indexes_dir)]
    started = time.perf_counter()
    out = subprocess.run([*base, "--queries", str(file), "-k", str(K), "--json", "-q"], env=env, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    batch_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([*base, queries[0], "-k", str(K), "-q"], env=env, check=True, capture_output=True)
    one_s = time.perf_counter() - started
    ids = [[h["id"] for h in json.loads(line)["hits"]] for line in out.splitlines() if line.startswith("{")]
    return {"queries": len(queries), "batch_seconds": round(batch_s, 2),
            "queries_per_s_incl_load": round(len(queries) / batch_s, 1),
            "single_query_seconds": round(one_s, 2), "ids": ids}  # fmt: skip


def screenshot(port: int, out: Path) -> bool:
    """The search page after a query, in Debian's headless Chromium (False where it is not installed)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return False
    import tempfile

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", args=args, headless=True,
            viewport={"width": 1000, "height": 900},
        )  # fmt: skip
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#index option", state="attached")
        page.fill("#query", "tiling window manager for X11")
        page.fill("#k", "5")
        page.click("#go")
        page.wait_for_selector("li.hit")
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    return True


def report(result: dict, out: Path) -> None:
    s, p, c = result["service"], result["peer"], result["search_command"]
    by = {row["clients"]: row for row in p}
    lines = [
        "# `embedtune serve` under load, against a plain FastAPI + sentence-transformers endpoint",
        "",
        f"{result['documents']:,} data/debian documents ({result['index_note']}), all-MiniLM-L6-v2 at "
        f"{MAX_SEQ_LENGTH} tokens, fp32 index; {result['queries']} sampled data/debian queries, POST /search "
        f"with one query and k={K}, keep-alive connections on loopback; each level stops after "
        f"{result['requests']} requests or {result['seconds']} s. {result['machine']}; service query encoder: "
        f"{result['backend']}. Client threads, service and peer share the machine's CPUs, and so did other "
        f"people's jobs: 1-minute load average {result['load_average_at_start']} at the start, "
        f"{result['load_average_at_end']} at the end (on {os.cpu_count()} CPUs).",
        "",
        "| clients | service req/s | p50 / p95 / p99 ms | CPU ms/req | peer req/s | p50 / p95 / p99 ms | CPU ms/req "
        "| req/s service / peer | CPU per request peer / service |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in s:
        peer = by[row["clients"]]
        ratio = row["req_per_s"] / peer["req_per_s"] if peer["req_per_s"] else float("nan")
        cpu = (peer["server_cpu_ms_per_request"] or 0) / (row["server_cpu_ms_per_request"] or float("nan"))
        lines.append(
            f"| {row['clients']} | {row['req_per_s']} | {row['p50_ms']} / {row['p95_ms']} / {row['p99_ms']} | "
            f"{row['server_cpu_ms_per_request']} | {peer['req_per_s']} | {peer['p50_ms']} / {peer['p95_ms']} / "
            f"{peer['p99_ms']} | {peer['server_cpu_ms_per_request']} | {ratio:.2f}x | {cpu:.2f}x |"
        )
    errors = sum(r["errors"] for r in s + p)
    lines += [
        "",
        "Requests/s on a machine shared with other jobs measure the share of the CPUs each server wins (a server "
        "with more busy threads wins more) as much as what it does with it; CPU time per request (user + system "
        "of the server process, all its threads) is the figure that carries over to an idle machine.",
        "",
        f"Idle batch-1 latency (1 client): service p50 {s[0]['p50_ms']} ms, peer p50 {p[0]['p50_ms']} ms. "
        f"`embedtune search` of one query, as a new process: {c['single_query_seconds']} s; "
        f"`embedtune search --queries` of all {c['queries']} queries in one process: {c['batch_seconds']} s "
        f"({c['queries_per_s_incl_load']} queries/s including the model and index load).",
        "",
        f"Top-{K} ids equal to `embedtune search`'s for {result['same_top_k']} of {c['queries']} queries. "
        f"Failed requests: {errors}.",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    if result.get("screenshot"):
        lines += [f"![the search page]({result['screenshot']})", ""]
    out.write_text("\n".join(lines), encoding="utf-8")


def measure_service(name: str, args: argparse.Namespace, queries: list[str], levels: list[int], result: dict):
    """The service's load levels (and the page's screenshot); returns its top-k ids for ``queries``."""
    port = free_port()
    service = start([sys.executable, "-m", "embedtune", "serve", "--index", name, "--indexes-dir",
                     str(args.indexes_dir), "--port", str(port)], port)  # fmt: skip
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/indexes")
        info = json.loads(conn.getresponse().read())["indexes"][0]
        result["documents"], result["backend"] = info["documents"], info["backend"]
        served_ids = [[h["id"] for h in post_search(conn, q)["results"][0]["hits"]] for q in queries]
        result["service"] = run_levels(port, service.pid, queries, levels, args.requests, args.seconds)
        if not args.quick:
            shot = RESULTS / "serve_search_page.png"
            result["screenshot"] = shot.name if screenshot(port, shot) else None
    finally:
        stop(service)
    return served_ids


def measure_peer(name: str, args: argparse.Namespace, queries: list[str], levels: list[int]) -> list[dict]:
    port = free_port()
    peer = start([sys.executable, str(HERE / "serve_peer.py"), str(args.indexes_dir / name), str(port)], port)
    try:
        return run_levels(port, peer.pid, queries, levels, args.requests, args.seconds)
    finally:
        stop(peer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=8192, help="first N data/debian documents (0 = all)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--levels", default="1,4,16,64")
    parser.add_argument("--requests", type=int, default=300, help="requests per level (at most)")
    parser.add_argument("--seconds", type=float, default=45, help="seconds per level (at most)")
    parser.add_argument("--indexes-dir", type=Path, default=ROOT / "indexes")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.docs, args.queries, args.requests, args.seconds = 1000, 40, 40, 10
    levels = [int(x) for x in args.levels.split(",")]
    name = build_subset_index(args.docs, args.indexes_dir)
    queries = sample_queries(args.queries)
    command = " ".join(["python benchmarks/serve_load.py", *sys.argv[1:]])
    result = {"machine": machine(), "documents": 0, "queries": len(queries), "requests": args.requests,
              "seconds": args.seconds, "command": command,
              "index_note": f"the first {args.docs:,}" if args.docs else "all",
              "load_average_at_start": round(os.getloadavg()[0], 1)}  # fmt: skip

    served_ids = measure_service(name, args, queries, levels, result)
    result["peer"] = measure_peer(name, args, queries, levels)
    searched = search_command(name, args.indexes_dir, queries)
    result["load_average_at_end"] = round(os.getloadavg()[0], 1)
    result["same_top_k"] = sum(a == b for a, b in zip(served_ids, searched.pop("ids"), strict=True))
    result["search_command"] = searched
    print(json.dumps({k: v for k, v in result.items() if k not in ("service", "peer")}, indent=1))
    if args.quick:
        return
    (RESULTS / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    report(result, RESULTS / "serve_load.md")


if __name__ == "__main__":
    main()
