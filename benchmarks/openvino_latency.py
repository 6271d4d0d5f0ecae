"""The OpenVINO backend against embedtune's PyTorch encoder: batch-1 query latency and documents/s.

Both encoders live in one process and take turns (per query for the latency, per repeat for the
documents, the order swapped each time), so that drift of a shared machine hits both alike. Same
model (the bundled all-MiniLM-L6-v2 at its 256-token limit), seeded samples of data/debian
documents and queries, batch 32 for documents, one query per ``encode`` call for the latency; no
vector cache. The PyTorch side runs ``--precision`` (default ``auto``: bf16 on CPUs with AMX or
AVX512-BF16, else fp32) and so does the OpenVINO side. Also reported: the conversion time of a first
use (empty converted-model folder) and the load time of a later one (read back from that folder),
and the cosine between the two backends' vectors. Results go to benchmarks/results/openvino_latency.{json,md}::

    python benchmarks/openvino_latency.py                      # 500 documents x 3 repeats, 200 queries
    python benchmarks/openvino_latency.py --quick              # smoke test: 64 documents, 20 queries, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine  # noqa: E402
from encoding_speed import BATCH, _texts  # noqa: E402 (the same seeded samples)


def _timed(make):
    started = time.perf_counter()
    value = make()
    return value, time.perf_counter() - started


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def measure(documents: int, queries: int, repeats: int, precision: str) -> dict:
    import numpy as np
    import openvino
    import torch

    from embedtune.encoding import Encoder, cpu_has_amx_bf16, cpu_has_bf16
    from embedtune.models import load_model

    model = load_model(None, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["EMBEDTUNE_CACHE"] = folder  # an empty converted-model folder: the first use converts
        _, convert_s = _timed(lambda: Encoder(model, precision, backend="openvino"))
        ov, load_s = _timed(lambda: Encoder(model, precision, backend="openvino"))
    pt = Encoder(model, precision)
    encoders = {"torch": pt, "openvino": ov}
    docs, qs = _texts("documents", documents), _texts("queries", queries)
    for encoder in encoders.values():  # warm-up: allocations, kernels of the common shapes
        encoder.encode(docs[: 2 * BATCH], batch_size=BATCH, show_progress=False)
        encoder.encode(qs[:5], batch_size=1, show_progress=False)
    names = list(encoders)
    doc_seconds: dict[str, list[float]] = {n: [] for n in names}
    vectors: dict[str, np.ndarray] = {}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            vectors[name], seconds = _timed(
                lambda e=encoders[name]: e.encode(docs, batch_size=BATCH, show_progress=False)
            )
            doc_seconds[name].append(seconds)
    latency: dict[str, list[float]] = {n: [] for n in names}
    query_vectors: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, query in enumerate(qs):
        for name in names if i % 2 == 0 else reversed(names):
            vector, seconds = _timed(lambda e=encoders[name], q=query: e.encode([q], batch_size=1, show_progress=False))
            latency[name].append(seconds * 1000)
            query_vectors[name].append(vector[0])
    cosine_docs = np.sum(vectors["torch"] * vectors["openvino"], axis=1)
    cosine_queries = np.sum(np.stack(query_vectors["torch"]) * np.stack(query_vectors["openvino"]), axis=1)
    rows = {
        name: {
            "precision": encoders[name].precision,
            "documents_per_s": round(documents / statistics.median(doc_seconds[name]), 1),
            "latency_ms_median": round(statistics.median(latency[name]), 2),
            "latency_ms_p95": round(_percentile(latency[name], 0.95), 2),
        }
        for name in names
    }
    compiled = ov._forward._compiled
    return {
        "machine": machine(),
        "amx_bf16": cpu_has_amx_bf16(),
        "bf16": cpu_has_bf16(),
        "openvino": openvino.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "openvino_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "precision_asked": precision,
        "documents": documents,
        "queries": queries,
        "repeats": repeats,
        "batch_size": BATCH,
        "convert_seconds": round(convert_s, 2),
        "load_converted_seconds": round(load_s, 2),
        "rows": rows,
        "cosine_min": {
            "documents": round(float(cosine_docs.min()), 5),
            "queries": round(float(cosine_queries.min()), 5),
        },
        "command": " ".join(["python benchmarks/openvino_latency.py", *sys.argv[1:]]),
    }


def markdown(result: dict) -> str:
    amx = "with AMX" if result["amx_bf16"] else ("AVX512-BF16, no AMX" if result.get("bf16") else "no bf16")
    lines = [
        "# OpenVINO backend against the PyTorch encoder (one process, alternating)",
        "",
        f"all-MiniLM-L6-v2 (256-token limit); {result['documents']} data/debian documents in batches of "
        f"{result['batch_size']} (median of {result['repeats']} alternating repeats) and {result['queries']} queries "
        f"one per call, alternating per query; {result['machine']} ({amx}); precision asked: "
        f"{result['precision_asked']}; torch {result['torch']} ({result['torch_threads']} threads), OpenVINO "
        f"{result['openvino']} ({result['openvino_threads']} threads). No vector cache.",
        "",
        "| backend | runs in | documents/s | vs torch | query latency, batch 1 (median / p95 ms) |",
        "|---|---|---|---|---|",
    ]
    base = result["rows"]["torch"]["documents_per_s"]
    for name, row in result["rows"].items():
        lines.append(
            f"| {name} | {row['precision']} | {row['documents_per_s']:.1f} | {row['documents_per_s'] / base:.2f}x "
            f"| {row['latency_ms_median']:.1f} / {row['latency_ms_p95']:.1f} |"
        )
    cos = result["cosine_min"]
    lines += [
        "",
        f"Min cosine between the backends' vectors: documents {cos['documents']:.5f}, queries {cos['queries']:.5f}. "
        f"Converting on first use: {result['convert_seconds']:.1f} s (conversion, sample check, save); "
        f"a later encoder reads the converted model back in {result['load_converted_seconds']:.1f} s.",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=500)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--quick", action="store_true", help="64 documents, 20 queries, 1 repeat; no files")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.queries, args.repeats = 64, 20, 1
    result = measure(args.documents, args.queries, args.repeats, args.precision)
    report = markdown(result)
    print(report)
    if args.quick:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "openvino_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "openvino_latency.md").write_text(report)


if __name__ == "__main__":
    main()
