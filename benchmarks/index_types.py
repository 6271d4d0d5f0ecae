"""Benchmark every FAISS index type of embedtune.ann at 100k and 1M vectors of the default model's dimension.

Per size and type: build time (training included), resident memory of the loaded index, size on disk,
queries/s at batch 1 and batch 64, recall@10 against exact search at the knob value the build
calibrated (embedtune.ann.calibrate, as ``embedtune index build`` does), and a sweep of the knob for
the recall / queries-per-second plot.

The vectors are synthetic and reproducible (seeded): a mixture of clusters, each a random
24-dimensional subspace around a random centre plus isotropic noise, L2-normalised, in 384
dimensions. Encoding a million real documents would take hours on this CPU. The queries (1,000) are
fresh draws from the same mixture, never corpus vectors.

Build and search each run in a fresh process (so memory is measured in a clean one), both under one
hold of ``/tmp/embedtune-bench.lock`` (the lock ``flock`` takes) so that timings of different people
on a shared machine never overlap. Usage (from the repository root)::

    .venv/bin/python benchmarks/index_types.py --sizes 100000,1000000
    .venv/bin/python benchmarks/index_types.py --report     # tables + plot from the saved JSON
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CACHE = Path(os.environ.get("EMBEDTUNE_BENCH_CACHE", "/tmp/embedtune-bench-cache"))
LOCK = "/tmp/embedtune-bench.lock"
DIM, N_QUERIES, K, SEED = 384, 1000, 10, 1234
N_CLUSTERS, LATENT, NOISE = 2000, 24, 0.02
BATCH1_QUERIES = 200
# Search runs on one FAISS thread: on this shared 2-vCPU machine OpenMP's second thread spin-waits
# behind other people's work and made batch-1 search up to 10x slower; one thread gives stable
# per-core figures. Builds (training, adding) use both cores.
THREADS, BUILD_THREADS = 1, 2


def _mixture(n: int, rng: np.random.Generator, centres: np.ndarray, bases: np.ndarray) -> np.ndarray:
    assign = rng.integers(0, len(centres), size=n)
    out = np.empty((n, DIM), dtype=np.float32)
    for c in np.unique(assign):
        rows = np.flatnonzero(assign == c)
        z = rng.standard_normal((len(rows), LATENT), dtype=np.float32)
        out[rows] = centres[c] + z @ bases[c] + NOISE * rng.standard_normal((len(rows), DIM), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def make_data(n: int) -> tuple[Path, Path, Path]:
    """Cached (vectors, queries, exact top-10 ids) for ``n`` synthetic vectors."""
    import faiss

    CACHE.mkdir(parents=True, exist_ok=True)
    base, queries, truth = (CACHE / f"{name}-{n}.npy" for name in ("base", "queries", "truth"))
    if truth.exists():
        return base, queries, truth
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((N_CLUSTERS, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Spread within a cluster ~ the centre's norm: neighbours at cosine 0.6-0.9, as for sentence embeddings.
    bases = rng.standard_normal((N_CLUSTERS, LATENT, DIM), dtype=np.float32) / np.sqrt(DIM * LATENT / 1.5)
    x = _mixture(n, rng, centres, bases)
    q = _mixture(N_QUERIES, np.random.default_rng(SEED + 1), centres, bases)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(x)
    _, ids = exact.search(q, K)
    np.save(base, x)
    np.save(queries, q)
    np.save(truth, ids)
    return base, queries, truth


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def child_build(n: int, kind: str, workdir: Path) -> dict:
    """Build, calibrate and write one index; report times and the chosen parameters."""
    import faiss

    from embedtune.ann import DEFAULT_TARGET_RECALL, calibrate, create_index, make_spec, training_sample

    base, _, _ = make_data(n)
    x = np.load(base)
    ids = np.arange(n, dtype=np.int64)
    spec = make_spec(kind, n, DIM)
    started = time.perf_counter()
    index = create_index(spec, DIM)
    if spec.needs_training:
        index.train(training_sample(x, spec))
    trained = time.perf_counter()
    for start in range(0, n, 100_000):
        index.add_with_ids(x[start : start + 100_000], ids[start : start + 100_000])
    built = time.perf_counter()
    cal = calibrate(index, spec, x, ids, DEFAULT_TARGET_RECALL)
    calibrated = time.perf_counter()
    path = workdir / f"{kind}-{n}.faiss"
    faiss.write_index(index, str(path))
    return {
        "n": n,
        "type": kind,
        "params": spec.params(),
        "factory": spec.factory_string(DIM),
        "train_s": round(trained - started, 2),
        "build_s": round(built - started, 2),
        "calibrate_s": round(calibrated - built, 2),
        "knobs": cal.knobs,
        "calibration_recall_at_10": cal.recall_at_10,
        "disk_bytes": path.stat().st_size,
    }


def child_search(n: int, kind: str, workdir: Path, knobs: dict, sweep: bool) -> dict:
    """Load one index in a clean process; memory, queries/s and recall@10 at the calibrated knobs."""
    import faiss

    from embedtune.ann import IndexSpec, knob_name, knob_steps, make_spec, recall_at_k, search_parameters

    _, queries, truth = make_data(n)
    q, truth_ids = np.load(queries), np.load(truth)
    path = workdir / f"{kind}-{n}.faiss"
    before = _rss()
    started = time.perf_counter()
    index = faiss.read_index(str(path))
    load_s = time.perf_counter() - started
    memory = _rss() - before
    started = time.perf_counter()
    mapped = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    mmap_load_s = time.perf_counter() - started
    del mapped

    def measure(knob_values: dict) -> dict:
        params = search_parameters(kind, knob_values)
        index.search(q[:64], K, params=params)  # warm-up
        started = time.perf_counter()
        found = np.vstack([index.search(q[i : i + 64], K, params=params)[1] for i in range(0, len(q), 64)])
        qps64 = len(q) / (time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(BATCH1_QUERIES):
            index.search(q[i : i + 1], K, params=params)
        qps1 = BATCH1_QUERIES / (time.perf_counter() - started)
        return {
            "knobs": knob_values,
            "qps_batch1": round(qps1, 1),
            "qps_batch64": round(qps64, 1),
            "recall_at_10": round(recall_at_k(found, truth_ids), 4),
        }

    result = {"memory_bytes": memory, "load_s": round(load_s, 3), "mmap_load_s": round(mmap_load_s, 3)}
    result |= measure(knobs)
    if sweep and knob_name(kind):
        spec: IndexSpec = make_spec(kind, n, DIM)
        name = knob_name(kind)
        steps = [v for v in knob_steps(spec) if v <= (256 if name == "nprobe" else 512)]
        result["sweep"] = [measure({name: v}) for v in steps]
    return result


@contextmanager
def bench_lock() -> Iterator[None]:
    """The shared benchmark lock (the one ``flock /tmp/embedtune-bench.lock`` takes), held per measurement."""
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--types", default="flat,sq8,hnsw,ivf-flat,ivf-sq8,ivf-pq")
    parser.add_argument("--workdir", type=Path, default=CACHE / "indexes")
    parser.add_argument("--report", action="store_true", help="Only write the markdown and plot from the JSON.")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import faiss

        mode, n, kind = args.child[0], int(args.child[1]), args.child[2]
        faiss.omp_set_num_threads(THREADS if mode == "search" else BUILD_THREADS)
        args.workdir.mkdir(parents=True, exist_ok=True)
        if mode == "data":
            make_data(n)
            print(json.dumps({}))
        elif mode == "build":
            print(json.dumps(child_build(n, kind, args.workdir)))
        else:
            print(json.dumps(child_search(n, kind, args.workdir, json.loads(args.child[3]), args.child[4] == "1")))
        return
    out_json = RESULTS / "index_types.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {"rows": []}
    if not args.report:
        for n in [int(s) for s in args.sizes.split(",")]:
            with bench_lock():
                run_child(["data", str(n), "-"])
            for kind in args.types.split(","):
                print(f"== {n} {kind}", flush=True)
                with bench_lock():  # build and search of one type in one hold: < 15 min even for HNSW at 1M
                    row = run_child(["build", str(n), kind])
                    row |= run_child(["search", str(n), kind, json.dumps(row["knobs"]), "1"])
                print(json.dumps({k: v for k, v in row.items() if k != "sweep"}), flush=True)
                (args.workdir / f"{kind}-{n}.faiss").unlink()
                results["rows"] = [r for r in results["rows"] if (r["n"], r["type"]) != (n, kind)] + [row]
                results["machine"] = machine()
                results["data"] = DATA_NOTE
                RESULTS.mkdir(exist_ok=True)
                out_json.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results)


DATA_NOTE = (
    f"synthetic, seed {SEED}: {N_CLUSTERS} clusters, each a random {LATENT}-dim subspace around a random centre "
    f"plus isotropic noise {NOISE}, L2-normalised, {DIM} dims; {N_QUERIES} held-out queries from the same mixture"
)


def machine() -> str:
    import faiss

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, faiss {faiss.__version__}, "
        f"search on {THREADS} FAISS thread, builds on {BUILD_THREADS}"
    )


def write_report(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(results["rows"], key=lambda r: (r["n"], r["type"]))
    lines = [
        "# FAISS index types: build, memory, speed and recall",
        "",
        f"Data: {results['data']}.",
        f"Machine: {results['machine']} (2 vCPUs of an Intel Sapphire Rapids, shared).",
        "Recall@10 is against exact search over the same vectors, at the knob value the build calibrated "
        "(target 0.99 on corpus vectors as queries), measured on the held-out queries.",
        "",
        "| vectors | type | params | knob | build s | memory MB | disk MB | q/s batch 1 | q/s batch 64 | recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        knob = ", ".join(f"{k}={v}" for k, v in r["knobs"].items()) or "-"
        cells = [
            f"{r['n']:,}",
            r["type"],
            params,
            knob,
            f"{r['build_s']:.1f}",
            f"{r['memory_bytes'] / 1e6:,.0f}",
            f"{r['disk_bytes'] / 1e6:,.0f}",
            f"{r['qps_batch1']:,.0f}",
            f"{r['qps_batch64']:,.0f}",
            f"{r['recall_at_10']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    (RESULTS / "index_types.md").write_text("\n".join(lines) + "\n")
    sizes = sorted({r["n"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, n in zip(axes[0], sizes, strict=True):
        for r in (r for r in rows if r["n"] == n):
            points = r.get("sweep") or [r]
            ax.plot(
                [p["qps_batch64"] for p in points], [p["recall_at_10"] for p in points], "o-", label=r["type"], ms=3
            )
            ax.plot([r["qps_batch64"]], [r["recall_at_10"]], "k*", ms=9)
        ax.set(xscale="log", xlabel="queries/s (batch 64)", ylabel="recall@10 vs exact", title=f"{n:,} vectors")
        ax.axhline(0.99, color="grey", lw=0.5, ls="--")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("recall@10 against queries/s (sweep of nprobe / efSearch; * = calibrated default)")
    fig.tight_layout()
    fig.savefig(RESULTS / "index_types_recall_qps.png", dpi=110)


if __name__ == "__main__":
    main()
