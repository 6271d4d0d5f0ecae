"""Scale benchmark: mine 50,000 queries against a 500,000-document corpus, embedtune vs sentence-transformers.

Both sides get the same input: the same (query, positive) pairs, the same corpus texts and the same
precomputed embeddings, so the comparison is of mining alone: retrieval, filtering, and writing the
mined rows to jsonl.gz. Each side runs in its own child process, under the same address-space limit;
the parent reads the child's peak RSS with ``getrusage(RUSAGE_CHILDREN)``.

The corpus is the 60,594 real Debian documents plus 439,406 synthetic ones, each made of a word span
of two random real documents (seeded). The real documents and the 50,000 train queries are encoded by
the bundled all-MiniLM-L6-v2 (bf16, 32 tokens; timed, not counted in the comparison). Encoding
439,406 more texts would take about an hour on this shared 2-core machine, so a synthetic document's
vector is the normalised mean of its two source documents' vectors plus seeded noise: what mining
costs does not depend on where the vectors came from.

Steps (each short enough to hold the benchmark lock for well under 15 minutes):

    python benchmarks/mining_scale.py prepare             # synthesise the corpus, pick the queries
    python benchmarks/mining_scale.py encode --queries
    python benchmarks/mining_scale.py encode --real       # the real documents
    python benchmarks/mining_scale.py vectors             # all vectors, for both sides
    python benchmarks/mining_scale.py run embedtune       # one side per call
    python benchmarks/mining_scale.py run st-default
    python benchmarks/mining_scale.py run st-batched
    python benchmarks/mining_scale.py backends            # FAISS vs embedtune's search on 2,048 queries
    python benchmarks/mining_scale.py report              # JSON + markdown + PNG under results/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache" / "mining_scale"
RESULTS = ROOT / "benchmarks" / "results"
N_DOCS, N_QUERIES, MAX_SEQ_LENGTH = 500_000, 50_000, 32
SEED, NOISE = 0, 0.02  # per-dimension noise: a norm of about 0.4 against the unit mean
MEMORY_LIMIT = 14 << 30  # address-space cap per side, so a failing peer cannot take the shared machine down
# The same selection on both sides: NV-Retriever's TopK-PercPos (95 %), 5 negatives from the top 50.
NUM_NEGATIVES, MAX_RANK, RELATIVE_MARGIN = 5, 50, 0.05


def _load_json(name: str):
    return json.loads((CACHE / name).read_text(encoding="utf-8"))


def prepare() -> None:
    """Real Debian documents plus synthetic ones made of word spans of two random real documents."""
    from embedtune.data import default_data_dir, load_split

    split = load_split(default_data_dir(), "train")
    doc_ids, texts = list(split.corpus), list(split.corpus.values())
    words = [t.split() for t in texts]
    rng = np.random.default_rng(SEED)
    a, b = rng.integers(0, len(texts), size=(2, N_DOCS - len(texts)))
    head, span = rng.integers(4, 11, size=len(a)), rng.integers(8, 17, size=len(a))
    for i, (x, y, h, n) in enumerate(zip(a, b, head, span, strict=True)):
        wy = words[y]
        off = int(rng.integers(0, max(1, len(wy) - n)))
        texts.append(" ".join(words[x][:h] + wy[off : off + n]))
        doc_ids.append(f"syn-{i:06d}")
    query_ids = list(split.qrels)[:N_QUERIES]
    pairs = [(q, d) for q in query_ids for d in split.qrels[q]]
    CACHE.mkdir(parents=True, exist_ok=True)
    sources = {"a": a.tolist(), "b": b.tolist()}
    (CACHE / "corpus.json").write_text(json.dumps({"ids": doc_ids, "texts": texts}), encoding="utf-8")
    (CACHE / "sources.json").write_text(json.dumps(sources), encoding="utf-8")
    (CACHE / "queries.json").write_text(
        json.dumps({"ids": query_ids, "texts": [split.queries[q] for q in query_ids], "pairs": pairs}),
        encoding="utf-8",
    )
    print(f"{len(texts)} documents ({len(split.corpus)} real), {len(query_ids)} queries, {len(pairs)} pairs")


def encode(queries: bool) -> None:
    """bf16 embeddings of the default model at 32 tokens: the queries, or the real documents."""
    from embedtune.encoding import Encoder
    from embedtune.models import load_model

    if queries:
        texts, out = _load_json("queries.json")["texts"], CACHE / "queries.npy"
    else:
        n_real = N_DOCS - len(_load_json("sources.json")["a"])
        texts, out = _load_json("corpus.json")["texts"][:n_real], CACHE / "docs-real.npy"
    encoder = Encoder(load_model("default", max_seq_length=MAX_SEQ_LENGTH))
    started = time.perf_counter()
    vectors = encoder.encode(texts, batch_size=64)
    seconds = time.perf_counter() - started
    np.save(out, vectors)
    timings = _load_json("encode_seconds.json") if (CACHE / "encode_seconds.json").exists() else {}
    timings[out.stem] = {"texts": len(texts), "seconds": round(seconds, 1), "precision": encoder.precision}
    (CACHE / "encode_seconds.json").write_text(json.dumps(timings, indent=2))
    print(f"{out.name}: {len(texts)} texts in {seconds:.0f} s ({encoder.precision})")


def synthesise_doc_vectors() -> np.ndarray:
    """Real documents' encodings, then each synthetic document's normalised source mean plus noise."""
    real = np.load(CACHE / "docs-real.npy")
    sources = _load_json("sources.json")
    noise = np.random.default_rng(SEED + 1).standard_normal((len(sources["a"]), real.shape[1]), dtype=np.float32)
    mean = real[sources["a"]] + real[sources["b"]]
    synthetic = mean / np.linalg.norm(mean, axis=1, keepdims=True) + NOISE * noise
    synthetic /= np.linalg.norm(synthetic, axis=1, keepdims=True)
    return np.concatenate([real, synthetic])


def _st_cache_names(model, queries: list[str], corpus: list[str]) -> tuple[str, str]:
    """The file names mine_hard_negatives(cache_folder=...) looks for (its own hashing, ST 6.2)."""
    name = model.model_card_data.base_model or ""
    q = hashlib.sha256(repr((name, None, None, queries)).encode(), usedforsecurity=False).hexdigest()
    c = hashlib.sha256(repr((name, None, None, corpus)).encode(), usedforsecurity=False).hexdigest()
    return f"query_embeddings_{q}.npy", f"corpus_embeddings_{c}.npy"


def _st_inputs():
    corpus, queries = _load_json("corpus.json"), _load_json("queries.json")
    text_of = dict(zip(queries["ids"], queries["texts"], strict=True))
    doc_text = dict(zip(corpus["ids"], corpus["texts"], strict=True))
    anchors = [text_of[q] for q, _ in queries["pairs"]]
    positives = [doc_text[d] for _, d in queries["pairs"]]
    return anchors, positives, corpus["texts"]


def vectors() -> None:
    """Write all document vectors for embedtune, and the same vectors for ST, in the order it de-duplicates
    texts into and under the file names its cache looks for; neither side then pays for making them."""
    from sentence_transformers import SentenceTransformer

    from embedtune.models import default_model_path

    anchors, positives, corpus = _st_inputs()
    model = SentenceTransformer(str(default_model_path()), device="cpu")
    st_corpus = list(dict.fromkeys(corpus + positives))
    st_queries = list(dict.fromkeys(anchors))
    first_doc = {t: i for i, t in reversed(list(enumerate(corpus)))}
    queries = _load_json("queries.json")
    first_query = {t: i for i, t in reversed(list(enumerate(queries["texts"])))}
    q_name, c_name = _st_cache_names(model, st_queries, st_corpus)
    st_dir = CACHE / "st"
    st_dir.mkdir(exist_ok=True)
    docs = synthesise_doc_vectors()
    np.save(CACHE / "docs-all.npy", docs)
    np.save(st_dir / c_name, docs[[first_doc[t] for t in st_corpus]])
    np.save(st_dir / q_name, np.load(CACHE / "queries.npy")[[first_query[t] for t in st_queries]])
    print(f"ST cache: {len(st_corpus)} unique documents, {len(st_queries)} unique queries")


def side_embedtune(out: Path) -> dict:
    from embedtune.mining import MiningConfig, MiningInput, mine, write_mined
    from embedtune.retrieval import DenseRetriever

    t0 = time.perf_counter()
    corpus, queries = _load_json("corpus.json"), _load_json("queries.json")
    doc_row = {d: i for i, d in enumerate(corpus["ids"])}
    query_row = {q: i for i, q in enumerate(queries["ids"])}
    data = MiningInput(
        doc_ids=corpus["ids"],
        doc_texts=corpus["texts"],
        query_ids=queries["ids"],
        query_texts=queries["texts"],
        pair_query=np.array([query_row[q] for q, _ in queries["pairs"]]),
        pair_doc=np.array([doc_row[d] for _, d in queries["pairs"]]),
    )
    retriever = DenseRetriever(np.load(CACHE / "docs-all.npy"), np.load(CACHE / "queries.npy"), "dense:default@32")
    t1 = time.perf_counter()
    config = MiningConfig(num_negatives=NUM_NEGATIVES, max_rank=MAX_RANK, relative_margin=RELATIVE_MARGIN)
    mined, report = mine(data, retriever, config, show_progress=False)
    t2 = time.perf_counter()
    write_mined(out, data, mined)
    t3 = time.perf_counter()
    return {
        "load_s": t1 - t0,
        "mine_s": t2 - t1,
        "write_s": t3 - t2,
        "rows": report.rows_written,
        "filtered": report.filtered,
        "rows_short": report.rows_short,
    }


def side_st(out: Path, faiss_batch_size: int) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from embedtune.models import default_model_path

    t0 = time.perf_counter()
    anchors, positives, corpus = _st_inputs()
    model = SentenceTransformer(str(default_model_path()), device="cpu")
    names = _st_cache_names(model, list(dict.fromkeys(anchors)), list(dict.fromkeys(corpus + positives)))
    missing = [n for n in names if not (CACHE / "st" / n).is_file()]
    if missing:  # without its cache ST would spend hours encoding 500k texts in fp32
        raise SystemExit(f"ST embedding cache missing: {missing}; run the vectors step first")
    dataset = Dataset.from_dict({"query": anchors, "positive": positives})
    t1 = time.perf_counter()
    mined = mine_hard_negatives(
        dataset,
        model,
        corpus=corpus,
        range_max=MAX_RANK,
        relative_margin=RELATIVE_MARGIN,
        num_negatives=NUM_NEGATIVES,
        sampling_strategy="top",
        output_format="n-tuple",
        output_scores=True,
        faiss_batch_size=faiss_batch_size,
        cache_folder=str(CACHE / "st"),
        verbose=True,
    )
    t2 = time.perf_counter()
    mined.to_json(str(out), compression="gzip")
    t3 = time.perf_counter()
    return {"load_s": t1 - t0, "mine_s": t2 - t1, "write_s": t3 - t2, "rows": len(mined)}


SIDES = {
    "embedtune": ("embedtune MiningConfig(5 negatives, ranks 1..50, relative_margin 0.05)", side_embedtune),
    "st-default": (
        "ST mine_hard_negatives(range_max=50, relative_margin=0.05, num_negatives=5), defaults otherwise "
        "(faiss_batch_size=16384, use_faiss=False)",
        lambda out: side_st(out, 16384),
    ),
    "st-batched": (
        "the same with faiss_batch_size=1024 (a 2 GB score block)",
        lambda out: side_st(out, 1024),
    ),
}


def child(side: str) -> None:
    out = CACHE / f"mined-{side}.jsonl.gz"
    result = SIDES[side][1](out)
    result["output_bytes"] = out.stat().st_size
    print("RESULT " + json.dumps(result))


def run(side: str) -> None:
    """Run one side in a child under the memory cap; record wall time, peak RSS and how it ended."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "child", side], preexec_fn=cap, capture_output=True, text=True, cwd=ROOT
    )
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    record = {
        "side": side,
        "what": SIDES[side][0],
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_bytes": peak,
        "peak_rss_gib": round(peak / 2**30, 2),
        "result": json.loads(lines[-1][7:]) if lines else None,
        "error": None if lines else (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:500],
        "log_tail": (proc.stdout + proc.stderr)[-3000:],
    }
    runs = _load_json("runs.json") if (CACHE / "runs.json").exists() else {}
    runs[side] = record
    (CACHE / "runs.json").write_text(json.dumps(runs, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "log_tail"}, indent=2))


def backends() -> None:
    """Exact top-50 of 2,048 queries over all 500,000 vectors: FAISS brute force vs embedtune's search.

    Why embedtune's dense search is a matrix product (bf16 on AMX) and not faiss.knn, and how exact
    the bf16 search + fp32 rescoring is against FAISS's fp32 result.
    """
    import faiss

    from embedtune.retrieval import DenseRetriever

    docs, queries = np.load(CACHE / "docs-all.npy"), np.load(CACHE / "queries.npy")
    rows = np.arange(2048)
    timings = {}
    started = time.perf_counter()
    exact_scores, exact_rows = faiss.knn(queries[rows], docs, MAX_RANK, metric=faiss.METRIC_INNER_PRODUCT)
    timings["faiss.knn fp32"] = time.perf_counter() - started
    agreement = {}
    for precision in ("fp32", "bf16"):
        retriever = DenseRetriever(docs, queries, precision=precision)
        started = time.perf_counter()
        scores, found = retriever.search(rows, MAX_RANK)
        timings[f"embedtune {precision}"] = time.perf_counter() - started
        same = np.mean([len(set(a) & set(b)) / MAX_RANK for a, b in zip(found, exact_rows, strict=True)])
        agreement[precision] = {
            "top50_overlap_with_faiss": round(float(same), 5),
            "max_abs_score_diff": float(np.abs(np.sort(scores, axis=1) - np.sort(exact_scores, axis=1)).max()),
        }
    result = {"queries": len(rows), "documents": len(docs), "k": MAX_RANK, "seconds": timings, "agreement": agreement}
    (CACHE / "backends.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def report() -> None:
    """Write results/mining_scale.{json,md,png} from the recorded runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _load_json("runs.json")
    encode_seconds = _load_json("encode_seconds.json")
    payload = {
        "machine": "2 vCPUs of an Intel Sapphire Rapids (AVX-512, AMX), 24 GiB RAM, shared; no GPU",
        "python": platform.python_version(),
        "documents": N_DOCS,
        "queries": N_QUERIES,
        "pairs": len(_load_json("queries.json")["pairs"]),
        "encoding": {"model": "all-MiniLM-L6-v2 (bundled)", "max_seq_length": MAX_SEQ_LENGTH, "parts": encode_seconds},
        "memory_limit_bytes": MEMORY_LIMIT,
        "runs": runs,
        "search_backends": _load_json("backends.json") if (CACHE / "backends.json").exists() else None,
    }
    (RESULTS / "mining_scale.json").write_text(json.dumps(payload, indent=2) + "\n")
    rows = [
        "| side | what | outcome | wall s | mining s | peak RSS GiB | rows written |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, r in runs.items():
        res = r["result"] or {}
        outcome = "ok" if r["returncode"] == 0 else f"failed (exit {r['returncode']}): {r['error']}"
        mine_s = f"{res['mine_s']:.0f}" if res else "-"
        rows.append(
            f"| {side} | {r['what']} | {outcome} | {r['wall_s']:.0f} | {mine_s} | {r['peak_rss_gib']:.2f} | "
            f"{res.get('rows', '-')} |"
        )
    enc = sum(p["seconds"] for p in encode_seconds.values())
    md = [
        f"# Mining {N_QUERIES:,} queries x {N_DOCS:,} documents",
        "",
        payload["machine"] + f"; each side in its own process, address space capped at {MEMORY_LIMIT >> 30} GiB.",
        f"Shared input: {payload['pairs']:,} (query, positive) pairs and embeddings precomputed once "
        f"(bf16, {MAX_SEQ_LENGTH} tokens: {enc:.0f} s to encode the 60,594 real documents and the queries; "
        "synthetic documents' vectors are derived from their sources; not counted below).",
        "",
        *rows,
        "",
    ]
    backends = payload["search_backends"]
    if backends:
        md += [
            f"Exact top-{backends['k']} of {backends['queries']:,} of the queries over all {backends['documents']:,} "
            "vectors (`backends`):",
            "",
            "| search | seconds | top-50 overlap with FAISS | max score difference |",
            "|---|---|---|---|",
        ]
        for name, seconds in backends["seconds"].items():
            agree = backends["agreement"].get(name.split()[-1], {}) if name.startswith("embedtune") else {}
            overlap = f"{agree['top50_overlap_with_faiss']:.5f}" if agree else "(reference)"
            diff = f"{agree['max_abs_score_diff']:.2g}" if agree else "-"
            md.append(f"| {name} | {seconds:.1f} | {overlap} | {diff} |")
        md.append("")
    (RESULTS / "mining_scale.md").write_text("\n".join(md))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=110)
    names = list(runs)
    colors = ["C0" if r["returncode"] == 0 else "C3" for r in runs.values()]
    ax1.bar(names, [r["wall_s"] for r in runs.values()], color=colors)
    ax1.set_ylabel("wall time, s")
    ax2.bar(names, [r["peak_rss_gib"] for r in runs.values()], color=colors)
    ax2.axhline(4, color="k", linestyle="--", linewidth=1)
    ax2.set_ylabel("peak RSS, GiB")
    fig.suptitle(f"mining {N_QUERIES:,} queries x {N_DOCS:,} docs (red = failed)")
    fig.tight_layout()
    fig.savefig(RESULTS / "mining_scale.png")
    print("\n".join(md))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("prepare")
    enc = sub.add_parser("encode")
    which = enc.add_mutually_exclusive_group(required=True)
    which.add_argument("--queries", action="store_true")
    which.add_argument("--real", action="store_true")
    sub.add_parser("vectors")
    for name in ("run", "child"):
        sub.add_parser(name).add_argument("side", choices=list(SIDES))
    sub.add_parser("backends")
    sub.add_parser("report")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare()
    elif args.step == "encode":
        encode(args.queries)
    elif args.step == "vectors":
        vectors()
    elif args.step == "backends":
        backends()
    elif args.step in ("run", "child"):
        (run if args.step == "run" else child)(args.side)
    else:
        report()


if __name__ == "__main__":
    main()
