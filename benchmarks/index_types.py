"""Benchmark every FAISS index type of embedtune.index at 100k and 1M vectors of the default model's dimension.

Per size and type: build time (training included), resident memory of the loaded index, size on disk,
queries/s at batch 1 and batch 64, recall@10 against exact search at the knob value the build
calibrated (embedtune.index.knobs, as ``embedtune index build`` does), and a sweep of the knob for
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
BATCH1_QUERIES, SWEEP_QUERIES = 200, 512
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


def make_data(dataset: str, real_index: str | None = None) -> tuple[Path, Path, Path]:
    """Cached (vectors, queries, exact top-10 ids) for a dataset: a synthetic size, or ``debian``.

    ``debian`` is the real thing at a smaller scale: the 60,594 document vectors of an embedtune flat
    index (``real_index``) and the Debian test split's 2,816 queries encoded by the same model.
    """
    import faiss

    CACHE.mkdir(parents=True, exist_ok=True)
    base, queries, truth = (CACHE / f"{name}-{dataset}.npy" for name in ("base", "queries", "truth"))
    if truth.exists():
        return base, queries, truth
    if dataset == "debian":
        x, q = _real_vectors(real_index)
    else:
        rng = np.random.default_rng(SEED)
        centres = rng.standard_normal((N_CLUSTERS, DIM), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        # Spread within a cluster ~ the centre's norm: neighbours at cosine 0.4-0.7.
        bases = rng.standard_normal((N_CLUSTERS, LATENT, DIM), dtype=np.float32) / np.sqrt(DIM * LATENT / 1.5)
        x = _mixture(int(dataset), rng, centres, bases)
        q = _mixture(N_QUERIES, np.random.default_rng(SEED + 1), centres, bases)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(x)
    _, ids = exact.search(q, K)
    np.save(base, x)
    np.save(queries, q)
    np.save(truth, ids)
    return base, queries, truth


def _real_vectors(index_name: str | None) -> tuple[np.ndarray, np.ndarray]:
    from embedtune.data import default_data_dir, load_qrels, load_queries, qrels_path
    from embedtune.index import Index
    from embedtune.retrieval import Searcher

    if not index_name:
        raise SystemExit("the debian dataset needs --real-index NAME (a flat index of data/debian)")
    index = Index.load(index_name, ROOT.parent / "indexes", mmap=False)
    if index.manifest.index_type != "flat":
        raise SystemExit(f"--real-index {index_name} must be a flat index")
    x = np.vstack([index.faiss_index.reconstruct(int(i)) for i in range(index.manifest.vectors)])
    queries = load_queries(default_data_dir())
    test = load_qrels(qrels_path(default_data_dir(), "test"), query_ids=queries)
    searcher = Searcher(index)
    q = searcher.encoder.encode([queries[qid] for qid in test], prompt_name=index.manifest.query_prompt_name)
    return x, q


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def child_build(dataset: str, kind: str, workdir: Path) -> dict:
    """Build, calibrate and write one index; report times and the chosen parameters."""
    import faiss

    from embedtune.index.knobs import calibrate
    from embedtune.index.types import DEFAULT_TARGET_RECALL, create_index, make_spec, training_sample

    base, _, _ = make_data(dataset)
    x = np.load(base)
    n = len(x)
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
    path = workdir / f"{kind}-{dataset}.faiss"
    faiss.write_index(index, str(path))
    return {
        "data": "synthetic" if dataset.isdigit() else dataset,
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


def child_search(dataset: str, kind: str, workdir: Path, knobs: dict, sweep: bool) -> dict:
    """Load one index in a clean process; memory, queries/s and recall@10 at the calibrated knobs."""
    import faiss

    from embedtune.index.knobs import recall_at_k
    from embedtune.index.types import IndexSpec, knob_name, knob_steps, make_spec, search_parameters
    from embedtune.ranking import row_scores

    base, queries, truth = make_data(dataset)
    q, truth_ids = np.load(queries), np.load(truth)
    x = np.load(base, mmap_mode="r")  # pages are read only to score results, after memory was measured
    n = len(x)  # the FAISS ids are the rows of x
    kth = np.einsum("qd,qd->q", q, x[truth_ids[:, K - 1]])  # the exact 10th-best score of each query
    path = workdir / f"{kind}-{dataset}.faiss"
    before = _rss()
    started = time.perf_counter()
    index = faiss.read_index(str(path))
    load_s = time.perf_counter() - started
    memory = _rss() - before
    before = _rss()
    started = time.perf_counter()
    mapped = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)  # as Index.load does
    mmap_load_s = time.perf_counter() - started
    mmap_memory = _rss() - before  # what mapping cost before any search touches the pages
    del mapped

    def measure(knob_values: dict, n_queries: int = len(q)) -> dict:
        params = search_parameters(kind, knob_values)
        index.search(q[:64], K, params=params)  # warm-up
        started = time.perf_counter()
        found = np.vstack([index.search(q[i : i + 64], K, params=params)[1] for i in range(0, n_queries, 64)])
        qps64 = n_queries / (time.perf_counter() - started)
        batch1 = min(BATCH1_QUERIES, n_queries // 2)
        started = time.perf_counter()
        for i in range(batch1):
            index.search(q[i : i + 1], K, params=params)
        qps1 = batch1 / (time.perf_counter() - started)
        return {
            "knobs": knob_values,
            "qps_batch1": round(qps1, 1),
            "qps_batch64": round(qps64, 1),
            "recall_at_10": round(recall_at_k(row_scores(q[:n_queries], x, found), kth[:n_queries]), 4),
        }

    result = {
        "memory_bytes": memory,
        "load_s": round(load_s, 3),
        "mmap_load_s": round(mmap_load_s, 3),
        "mmap_memory_bytes": mmap_memory,
    }
    result |= measure(knobs)
    if sweep and knob_name(kind):
        spec: IndexSpec = make_spec(kind, n, DIM)
        name = knob_name(kind)
        steps = [v for v in knob_steps(spec) if v <= (256 if name == "nprobe" else 512)]
        result["sweep"] = [measure({name: v}, SWEEP_QUERIES) for v in steps]  # fewer queries: many points
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


def run_child(args: list[str], real_index: str | None = None) -> dict:
    extra = ["--real-index", real_index] if real_index else []
    cmd = [sys.executable, __file__, *extra, "--child", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="Synthetic sizes; 'debian' = real vectors.")
    parser.add_argument("--types", default="flat,sq8,hnsw,ivf-flat,ivf-sq8,ivf-pq")
    parser.add_argument("--real-index", default=None, help="Flat index of data/debian for the 'debian' dataset.")
    parser.add_argument("--workdir", type=Path, default=CACHE / "indexes")
    parser.add_argument("--report", action="store_true", help="Only write the markdown and plot from the JSON.")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import faiss

        mode, dataset, kind = args.child[:3]
        faiss.omp_set_num_threads(THREADS if mode == "search" else BUILD_THREADS)
        args.workdir.mkdir(parents=True, exist_ok=True)
        if mode == "data":
            make_data(dataset, args.real_index)
            print(json.dumps({}))
        elif mode == "build":
            print(json.dumps(child_build(dataset, kind, args.workdir)))
        else:
            print(
                json.dumps(child_search(dataset, kind, args.workdir, json.loads(args.child[3]), args.child[4] == "1"))
            )
        return
    if not args.report:
        for dataset in args.sizes.split(","):
            run_dataset(dataset, args.types.split(","), args.workdir, args.real_index)
    write_report(json.loads(OUT_JSON.read_text()))


OUT_JSON = RESULTS / "index_types.json"
MAX_HOLD_S = 9 * 60  # start no new measurement after this long in one hold (the shared limit is 15 min)


def run_dataset(dataset: str, kinds: list[str], workdir: Path, real_index: str | None) -> None:
    """Measure each type, several per hold of the lock while the hold stays short."""
    pending = list(kinds)
    while pending:
        with bench_lock():
            started = time.perf_counter()
            run_child(["data", dataset, "-"], real_index)
            while pending and time.perf_counter() - started < MAX_HOLD_S:
                kind = pending.pop(0)
                print(f"== {dataset} {kind}", flush=True)
                row = run_child(["build", dataset, kind])
                row |= run_child(["search", dataset, kind, json.dumps(row["knobs"]), "1"])
                print(json.dumps({k: v for k, v in row.items() if k != "sweep"}), flush=True)
                (workdir / f"{kind}-{dataset}.faiss").unlink()
                save_row(row)


def save_row(row: dict) -> None:
    results = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {"rows": []}
    key = (row["data"], row["n"], row["type"])
    results["rows"] = [r for r in results["rows"] if (r["data"], r["n"], r["type"]) != key] + [row]
    results["machine"] = machine()
    results["data"] = DATA_NOTE
    RESULTS.mkdir(exist_ok=True)
    OUT_JSON.write_text(json.dumps(results, indent=2) + "\n")


DATA_NOTE = (
    f"synthetic, seed {SEED}: {N_CLUSTERS} clusters, each a random {LATENT}-dim subspace around a random centre "
    f"plus isotropic noise {NOISE}, L2-normalised, {DIM} dims; {N_QUERIES} held-out queries from the same mixture"
)


REAL_NOTE = (
    "Data 'debian': the 60,594 real document vectors of the default model (all-MiniLM-L6-v2, texts cut at 64 "
    "tokens) and the 2,816 real test-split queries, from an embedtune flat index of data/debian."
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

    order = {kind: i for i, kind in enumerate(("flat", "sq8", "hnsw", "ivf-flat", "ivf-sq8", "ivf-pq"))}
    rows = sorted(results["rows"], key=lambda r: (r["data"] != "synthetic", r["n"], order[r["type"]]))
    lines = [
        "# FAISS index types: build, memory, speed and recall",
        "",
        f"Data: {results['data']}." + (f" {REAL_NOTE}" if any(r["data"] == "debian" for r in rows) else ""),
        "",
        f"Machine: {results['machine']} (2 vCPUs of an Intel Sapphire Rapids, shared with other work: "
        "queries/s vary by about ±20 % between runs).",
        "",
        "Build = training + adding (calibration not included). Memory = resident-set growth when the index file "
        "is read into a fresh process. knob = the nprobe / efSearch the build calibrated (target recall@10 0.99 "
        "against exact search, on 500 corpus vectors as queries). recall@10 = against exact search on the "
        "held-out queries, at that knob, by score as ann-benchmarks counts it: a result is a hit when its exact "
        "score reaches the exact 10th best (within 1e-5), so any one of tied duplicate documents counts.",
        "",
        "| data | vectors | type | params | knob | build s | memory MB | disk MB | q/s batch 1 | q/s batch 64 "
        "| recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        knob = ", ".join(f"{k}={v}" for k, v in r["knobs"].items()) or "-"
        cells = [
            r["data"],
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
    panels = list(dict.fromkeys((r["data"], r["n"]) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (data, n) in zip(axes[0], panels, strict=True):
        for r in (r for r in rows if (r["data"], r["n"]) == (data, n)):
            points = r.get("sweep") or [r]  # flat and sq8 have no knob: one point
            ax.plot(
                [p["qps_batch64"] for p in points],
                [p["recall_at_10"] for p in points],
                "o-",
                label=r["type"],
                ms=3 if len(points) > 1 else 8,
            )
            ax.plot([r["qps_batch64"]], [r["recall_at_10"]], "k*", ms=9)
        ax.set(xscale="log", xlabel="queries/s (batch 64, 1 thread)", ylabel="recall@10 vs exact")
        ax.set_title(f"{n:,} {data} vectors")
        ax.axhline(0.99, color="grey", lw=0.5, ls="--")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("recall@10 against queries/s (sweep of nprobe / efSearch; * = calibrated default)")
    fig.tight_layout()
    fig.savefig(RESULTS / "index_types_recall_qps.png", dpi=110)


if __name__ == "__main__":
    main()
