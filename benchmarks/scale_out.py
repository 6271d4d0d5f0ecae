"""Scale-out overheads of sharded index builds: what sharding costs and what it saves (issue 16).

Two measurements, each step in a fresh process (so its peak memory is its own), all under one hold
of ``/tmp/embedtune-bench.lock`` so timings of different people on a shared machine never overlap:

* ``encode``: the first ``--docs`` documents of data/debian with the bundled model, built once by one
  process (``build_index``) and once as ``--shards`` shards encoded one after another
  (``encode_shard``, as separate scheduler jobs would) and merged (``merge_shards``); per step: wall
  time, documents/s, peak memory. The merged index is checked to equal the one-process index.
* ``merge``: the memory bound of the merge at a size where vectors, not the model, dominate:
  ``--vectors`` synthetic normalised vectors (384 dims, seeded) in ``--shards`` shard files, merged
  from disk, against the one-process build's FAISS step on the same vectors held in memory (as
  ``build_index`` holds them after encoding). No model is loaded in either.

Peak memory is reported twice: peak RSS (``ru_maxrss``, which counts pages of memory-mapped files the
process touched) and peak private memory (RSS minus file-backed shared pages, sampled every 20 ms),
which is what the merge's design bounds. Encoding runs one torch thread per process, so documents/s
is a per-core rate, the unit of the 100M-document estimate in the README.

``training_rows()`` adds the distributed-training half (``benchmarks/scale_out_training.py``, run
first: it saves ``results/scale_out_training.json``) to the report.

Usage (from the repository root)::

    .venv/bin/python benchmarks/scale_out.py --docs 4000 --shards 2 --vectors 300000
    .venv/bin/python benchmarks/scale_out.py --report    # the markdown from the saved JSON
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import RESULTS, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's embedtune, as in the measured child processes
LOCK = "/tmp/embedtune-bench.lock"
DIM, SEED = 384, 1234


def training_rows() -> list[dict]:
    """The distributed-training rows (1 vs 2 processes) that ``benchmarks/scale_out_training.py`` saved
    in ``results/scale_out_training.json``: CPU seconds per step over all processes (the overhead of
    running data-parallel on one machine) and the set-up outside training. Empty before that ran."""
    saved = RESULTS / "scale_out_training.json"
    if not saved.is_file():
        return []
    measured = json.loads(saved.read_text())
    rows = []
    for name, v in measured["variants"].items():
        processes = int(name.split()[0])
        rows.append(
            {
                "step": "one training step (CPU s, all processes)",
                "processes": processes,
                "seconds": round(v["step_cpu_s"], 2),
                "note": name,
            }
        )
        rows.append(
            {
                "step": "start-up and set-up outside training",
                "processes": processes,
                "seconds": round(v["outside_training_s"], 1),
                "note": f"load average {measured['load']}",
            }
        )
    return rows


class PeakMemory:
    """Peak RSS and peak private memory (RSS minus file-backed shared pages) of this process."""

    def __init__(self) -> None:
        import psutil

        self.process, self.private, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            info = self.process.memory_info()
            self.private = max(self.private, info.rss - info.shared)

    def result(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_private_mb": round(self.private / 2**20, 1),
        }


def _child(step: dict) -> dict:
    """One measured step, in this (fresh) process."""
    import torch

    torch.set_num_threads(1)
    from embedtune.encoding import EncodeSettings
    from embedtune.index import BuildSettings, build_index
    from embedtune.index.merge import merge_shards
    from embedtune.index.shards import encode_shard

    peak, started = PeakMemory(), time.perf_counter()
    kind, idx, build = step["kind"], Path(step["indexes_dir"]), BuildSettings(index_type=step["index_type"])
    encode = EncodeSettings(cache=False)
    extra: dict[str, float] = {}
    if kind == "single":
        manifest = build_index(step["corpus"], "single", model="default", build=build, encode=encode,
                               indexes_dir=idx, show_progress=False)  # fmt: skip
        extra["encode_seconds"] = manifest.encode_seconds
    elif kind == "shard":
        record = encode_shard(step["corpus"], "sharded", shards=step["shards"], shard=step["shard"],
                              model="default", encode=encode, indexes_dir=idx, show_progress=False)  # fmt: skip
        extra |= {"encode_seconds": record.encode_seconds, "documents": record.count}
    elif kind == "merge":
        merge_shards(step["name"], indexes_dir=idx, build=build, show_progress=False)
    elif kind == "in_memory":
        _in_memory_build(step, build)
    return {"seconds": round(time.perf_counter() - started, 2), **extra, **peak.result()}


def _synthetic(n: int, shard: int) -> object:
    import numpy as np

    rng = np.random.default_rng(SEED + shard)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _in_memory_build(step: dict, build) -> None:
    """The one-process build after encoding: chunks held, stacked, then trained, added and calibrated."""
    import numpy as np

    from embedtune.index.build import build_faiss

    chunks = [_synthetic(n, k) for k, n in enumerate(step["sizes"])]
    vectors = np.vstack(chunks)
    del chunks
    build_faiss(vectors, np.arange(len(vectors), dtype=np.int64), build, False)


def _write_synthetic_shards(folder: Path, sizes: list[int]) -> None:
    """Shard folders of synthetic vectors and one-word documents, as ``encode_shard`` writes them."""
    import numpy as np

    from embedtune.index.shards import DOCS_FILE, VECTORS_FILE, ShardRecord, shard_dir, shard_files
    from embedtune.index.store import DocStore

    identity = {"model_path": "synthetic", "model_fingerprint": "0" * 64, "max_seq_length": 256, "precision": "fp32",
                "pooling": "mean", "prompts": {}, "query_prompt_name": None, "document_prompt_name": None}  # fmt: skip
    first = 0
    for k, n in enumerate(sizes):
        target = shard_dir(folder, len(sizes), k)
        target.mkdir(parents=True)
        np.save(target / VECTORS_FILE, _synthetic(n, k))
        store = DocStore(target / DOCS_FILE, create=True)
        store.insert((first + i, f"d{first + i}", f"doc {first + i}", {}) for i in range(n))
        store.commit()
        store.close()
        corpus = {"corpus_path": "synthetic", "corpus_sha256": "0" * 64}
        lines = (sum(sizes), first + 1, first + n + 1)  # the corpus's lines, this shard's first and end line
        ShardRecord(
            "synthetic", len(sizes), k, *lines, first, n, DIM, identity, corpus, 0.0, shard_files(target)
        ).write(target)
        first += n


def _run(step: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(step)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {step['label']}: {result}", file=sys.stderr)
    return {"label": step["label"], **result}


def _encode_part(tmp: Path, docs: int, shards: int, index_type: str) -> dict:
    import gzip

    tmp.mkdir(parents=True)
    corpus = tmp / "corpus.jsonl"
    with gzip.open(ROOT / "data/debian/corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        corpus.write_text("".join(line for _, line in zip(range(docs), f, strict=False)), encoding="utf-8")
    base = {"corpus": str(corpus), "indexes_dir": str(tmp / "idx"), "index_type": index_type}
    rows = [_run(base | {"kind": "single", "label": "one process: build_index"})]
    for k in range(shards):
        rows.append(_run(base | {"kind": "shard", "shards": shards, "shard": k, "label": f"shard {k} of {shards}"}))
    rows.append(_run(base | {"kind": "merge", "name": "sharded", "label": f"merge of {shards} shards"}))
    from embedtune.index import Index

    single, merged = Index.load("single", tmp / "idx"), Index.load("sharded", tmp / "idx")
    equal = single.doc_ids == merged.doc_ids and single.manifest.count == merged.manifest.count == docs
    return {"docs": docs, "shards": shards, "index_type": index_type, "rows": rows, "merged_equals_single": equal}


def _merge_part(tmp: Path, vectors: int, shards: int, index_types: list[str]) -> dict:
    sizes = [vectors // shards + (k < vectors % shards) for k in range(shards)]
    _write_synthetic_shards(tmp / "synthetic.shards", sizes)
    rows = []
    for kind in index_types:
        base = {"indexes_dir": str(tmp), "index_type": kind, "sizes": sizes}
        rows.append(_run(base | {"kind": "in_memory", "label": f"{kind}: one process, vectors in memory, then FAISS"}))
        rows.append(_run(base | {"kind": "merge", "name": "synthetic", "label": f"{kind}: merge of {shards} shards"}))
        shutil.rmtree(tmp / "synthetic")  # the next type builds it anew
    return {"vectors": vectors, "shards": shards, "dimension": DIM, "index_types": index_types, "rows": rows}


def report(results: dict) -> str:
    enc, mrg = results["encode"], results["merge"]
    lines = [
        "# Scale-out: sharded encoding and merge",
        "",
        f"Machine: {results['machine']}; load average {results.get('load_average', 'not recorded')}. Each step a "
        f"fresh process, one torch thread. Command: `{results['command']}`",
        "",
        f"## Encoding {enc['docs']:,} data/debian documents, bundled model, index type {enc['index_type']}",
        "",
        "| step | seconds (all) | seconds encoding | documents/s encoding | peak RSS MB | peak private MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in enc["rows"]:
        docs = r.get("documents", enc["docs"])
        encoding = r.get("encode_seconds")
        rate = f"{docs / encoding:.0f}" if encoding else "-"
        memory = f"{r['peak_rss_mb']} | {r['peak_private_mb']}"
        lines.append(f"| {r['label']} | {r['seconds']} | {encoding or '-'} | {rate} | {memory} |")
    lines += [
        "",
        f"Merged index equals the one-process index (ids, count): {enc['merged_equals_single']}.",
        "",
        f"## Merge memory: {mrg['vectors']:,} synthetic {mrg['dimension']}-dim vectors in {mrg['shards']} shards "
        f"({mrg['vectors'] * mrg['dimension'] * 4 / 2**20:,.0f} MB as float32; no model loaded)",
        "",
        "| step | seconds | peak RSS MB | peak private MB |",
        "|---|---|---|---|",
        *(f"| {r['label']} | {r['seconds']} | {r['peak_rss_mb']} | {r['peak_private_mb']} |" for r in mrg["rows"]),
    ]
    training = results.get("training") or []
    if training:
        lines += ["", "## Distributed training", "", "| step | processes | seconds | note |", "|---|---|---|---|"]
        lines += [f"| {r['step']} | {r['processes']} | {r['seconds']} | {r['note']} |" for r in training]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--vectors", type=int, default=300_000)
    parser.add_argument("--type", default="flat", help="index type of the encoding part")
    parser.add_argument("--merge-types", default="flat,ivf-pq", help="index types of the merge part")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    out = RESULTS / "scale_out.json"
    if not args.report:
        with open(LOCK, "w") as lock, tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
            fcntl.flock(lock, fcntl.LOCK_EX)
            load = os.getloadavg()[0]
            results = {
                "machine": machine(),
                "command": "python benchmarks/scale_out.py " + " ".join(sys.argv[1:]),
                "encode": _encode_part(Path(tmp) / "encode", args.docs, args.shards, args.type),
                "merge": _merge_part(Path(tmp) / "merge", args.vectors, args.shards, args.merge_types.split(",")),
            }
            results["load_average"] = f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (1-minute)"
        out.write_text(json.dumps(results, indent=2) + "\n")
    results = json.loads(out.read_text()) | {"training": training_rows()}
    (RESULTS / "scale_out.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
