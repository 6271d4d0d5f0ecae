"""Encoding speed: embedtune's precisions against sentence-transformers ``encode()``, side by side.

Same model (the bundled all-MiniLM-L6-v2 at its own 256-token limit), same texts (a seeded sample of
2,000 data/debian corpus documents, and one of 2,000 queries), same batch size (32). The peer is
sentence-transformers' ``encode()`` in fp32 (on a GPU also in fp16). Each variant runs in its own
process, and the variants alternate over the repeats so that drift of the machine hits all alike.
Texts/s is the sample's size over the time of one ``encode`` call after a warm-up call on 64
documents and one query, whose time is reported apart (for the compiled variant: the compiles).
Query latency is one query per ``encode`` call (batch 1), over 1,000 queries (the median: this
machine's short-term drift moves single calls by a third). Each variant's
vectors are compared with the peer's (cosine).

``--quality`` adds nDCG@10 and recall@10 of each precision on the whole data/debian test split
(``embedtune.evaluate.evaluate_model``: 60,594 documents, 2,816 queries; no encoding cache), the
slow part. Commands (results go to benchmarks/results/encoding_speed.{json,md,png})::

    python benchmarks/encoding_speed.py --quality     # ~15 min of speed + ~30 min of quality on 2 cores
    python benchmarks/encoding_speed.py               # speed only, 2 alternating repeats
    python benchmarks/encoding_speed.py --quick       # smoke test: 64 texts, 1 repeat, prints only (<1 min)
    python benchmarks/encoding_speed.py --profile     # speed, and each stage of bf16 and the plain bf16 loop
    python benchmarks/encoding_speed.py --quality-only  # the quality part added to the stored speed run

The speed part wants a machine that runs nothing else; the quality part does not, so it can be run
apart, when the machine is busy.

Variants on a CPU: ``st-fp32`` (the peer), ``auto`` (the encoder every default makes,
``make_encoder(model, "auto")``, for a corpus of ``OPENVINO_MIN_TEXTS`` texts: what index build and
evaluation run on a real corpus; the sample itself is smaller than that; the report says which
backend and precision it chose), embedtune ``fp32``, ``bf16`` (what ``auto`` runs without OpenVINO
on a CPU with bf16 arithmetic: pre-packed Linear weights, GELU fused), ``bf16-unpacked`` (PyTorch's
own bf16 Linear layers, the A/B for packing), ``int8``, and ``bf16-compiled``: the unpacked bf16
encoder with its transformer replaced by ``torch.compile(..., dynamic=True, options={"freezing":
True})``, a candidate that embedtune does not use because its gain (a few %) does not repay its ~30
s compile (the row shows whether that still holds), and ``openvino`` (``auto``'s precision through
the OpenVINO backend; only where openvino is installed; its first calls include the conversion in
the first process that meets an empty converted-model folder). Reference rows, the limits ``auto``
is held against: ``torch-bf16-loop`` (a plain ``model.bfloat16()`` loop over token-sorted batches,
no embedtune code), ``openvino-fp32`` and ``openvino-bf16`` (the bf16 hint given whatever the CPU),
and ``openvino-int8`` (NNCF static int8, ``openvino_int8.py``'s quantisation on 300 other documents;
its first call includes the quantisation; where nncf is installed). On a GPU: ``st-fp32``,
``st-fp16``, ``fp32``, ``fp16`` and ``bf16``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine  # noqa: E402

DATA = ROOT / "data" / "debian"
BATCH, SAMPLE, QUICK_SAMPLE, LATENCY_QUERIES, SEED = 32, 2000, 64, 1000, 0
CPU_VARIANTS = (
    ("st-fp32", "auto", "fp32", "bf16", "bf16-unpacked", "int8", "bf16-compiled", "torch-bf16-loop")
    + (("openvino", "openvino-fp32", "openvino-bf16") if find_spec("openvino") else ())
    + (("openvino-int8",) if find_spec("nncf") else ())
)
GPU_VARIANTS = ("st-fp32", "st-fp16", "fp32", "fp16", "bf16")
KINDS = ("documents", "queries")
# The reference rows auto is held against, and the quality bound a row must meet to count.
REFERENCES = ("torch-bf16-loop", "openvino-fp32", "openvino-bf16", "openvino-int8")
MIN_TOP10 = 0.98


def _texts(kind: str, n: int) -> list[str]:
    """A seeded sample of ``n`` corpus documents or queries (the same in every process)."""
    name = "corpus.jsonl.gz" if kind == "documents" else "queries.jsonl.gz"
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return random.Random(SEED).sample(texts, n)


def _encode_fn(variant: str, scratch: Path):
    """A function texts -> normalised vectors for one variant (``scratch``: the run's folder)."""
    from embedtune.encoding import Encoder
    from embedtune.models import load_model

    model = load_model(None)
    if variant == "auto":  # every default, for a corpus large enough that auto may convert (see the docstring)
        from embedtune.encoding import OPENVINO_MIN_TEXTS, make_encoder

        encoder = make_encoder(model, "auto", workload=OPENVINO_MIN_TEXTS)

        def encode(texts: list[str]):
            return encoder.encode(texts, batch_size=BATCH, show_progress=False)

        encode.backend = f"{encoder.backend} {encoder.precision}"
        return encode
    if variant.startswith("st-"):
        if variant == "st-fp16":
            model = model.half()
        return lambda texts: model.encode(texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)
    if variant == "torch-bf16-loop":
        return _plain_bf16_loop(model)
    if variant == "openvino-int8":  # quantised once per run (minutes), read back by the later processes
        import openvino as ov
        from openvino_int8 import Int8Encoder, quantize

        saved = scratch / "openvino-int8.xml"
        if saved.is_file():
            quantized = ov.Core().read_model(saved)
        else:
            quantized = quantize(model, _texts("documents", SAMPLE + 300)[SAMPLE:])
            ov.save_model(quantized, saved, compress_to_fp16=False)
        return Int8Encoder(model, quantized).encode
    if variant.startswith("openvino"):
        precision = variant.partition("-")[2] or "auto"
        if precision == "bf16":  # the reference row: the bf16 hint whatever the CPU (the backend needs bf16 arithmetic)
            import embedtune.encoding.openvino as backend

            backend.cpu_has_bf16 = lambda: True
        encoder = Encoder(model, precision, cache=None, backend="openvino")
        return lambda texts: encoder.encode(texts, batch_size=BATCH, show_progress=False)
    precision, _, kind = variant.partition("-")
    # compiling packs the Linear weights itself (freezing), so it starts from PyTorch's own modules
    encoder = Encoder(model, precision, cache=None, pack=not kind)
    if kind == "compiled":
        import torch

        transformer = encoder.model[0]  # sentence-transformers' Transformer module: compile what it runs
        transformer.model = torch.compile(transformer.model, dynamic=True, options={"freezing": True})
    return lambda texts: encoder.encode(texts, batch_size=BATCH, show_progress=False)


def _plain_bf16_loop(model, stages: dict[str, float] | None = None):
    """The reference a user could write in a few lines: ``model.bfloat16()``, batches sorted by token count.

    ``stages`` (the profile) collects the seconds of its length pass, tokenisation and model calls.
    """
    import numpy as np
    import torch

    model = model.bfloat16().eval()
    clock = _Stages(stages)

    def encode(texts: list[str]) -> np.ndarray:
        with clock("length pass"):
            tokens = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
            order = np.argsort([len(ids) for ids in tokens])[::-1]
        out = np.zeros((len(texts), model.get_embedding_dimension()), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), BATCH):
                rows = order[start : start + BATCH]
                with clock("tokenisation"):
                    features = model.preprocess([texts[i] for i in rows])
                with clock("model"):
                    out[rows] = model(dict(features))["sentence_embedding"].float().numpy()
        return out

    return encode


class _Stages:
    """A context manager per stage name that adds the stage's seconds to ``stages`` (nothing if None)."""

    def __init__(self, stages: dict[str, float] | None):
        self.stages = stages

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.stages is not None:
                self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - started


def _timed(clock: _Stages, name: str, fn):
    def timed(*args, **kwargs):
        with clock(name):
            return fn(*args, **kwargs)

    return timed


def profile_stages(variant: str, n: int) -> dict:
    """Seconds per stage of one encode of ``n`` documents: ``bf16`` (embedtune's encoder, what ``auto``
    runs with bf16) or ``torch-bf16-loop``. The model stage includes pooling; ``transformer`` is its
    share spent in the transformer; ``other`` is the rest of the call (sorting, normalising, copying)."""
    from embedtune.encoding import Encoder
    from embedtune.models import load_model

    stages: dict[str, float] = {}
    clock = _Stages(stages)
    model = load_model(None)
    if variant == "torch-bf16-loop":
        encode = _plain_bf16_loop(model, stages)
        transformer = model[0]
    else:
        encoder = Encoder(model, variant, cache=None)
        encoder._token_lengths = _timed(clock, "length pass", encoder._token_lengths)
        encoder.model.preprocess = _timed(clock, "tokenisation", encoder.model.preprocess)
        encoder._forward = _timed(clock, "model", encoder._forward)
        transformer = encoder.model[0]

        def encode(texts):
            return encoder.encode(texts, batch_size=BATCH, show_progress=False)

    transformer.forward = _timed(clock, "transformer", transformer.forward)
    encode(_texts("documents", 2 * BATCH))  # warm-up, as in run_variant
    stages.clear()
    texts = _texts("documents", n)
    started = time.perf_counter()
    encode(texts)
    total = time.perf_counter() - started
    stages["other"] = total - sum(v for k, v in stages.items() if k != "transformer")
    return {"variant": variant, "texts": n, "total_s": round(total, 3)} | {k: round(v, 3) for k, v in stages.items()}


def run_variant(variant: str, kind: str, n: int, vectors_out: Path) -> dict:
    """Time one variant on one kind of text in this process; save its vectors for the cosine check."""
    import numpy as np
    import torch

    encode = _encode_fn(variant, vectors_out.parent)
    started = time.perf_counter()
    encode(_texts("documents", 2 * BATCH))  # warm-up: allocations, oneDNN kernels, compilation if any
    encode(_texts("queries", 1))  # a compiled model compiles again for a batch of 1
    first_call = time.perf_counter() - started
    texts = _texts(kind, n)
    started = time.perf_counter()
    vectors = encode(texts)
    seconds = time.perf_counter() - started
    np.save(vectors_out, np.asarray(vectors, dtype=np.float32))
    result = {
        "variant": variant,
        "kind": kind,
        "texts": n,
        "texts_per_s": round(n / seconds, 1),
        "seconds": round(seconds, 2),
        "first_call_seconds": round(first_call, 1),
        "threads": torch.get_num_threads(),
        **({"backend": encode.backend} if hasattr(encode, "backend") else {}),
    }
    if kind == "queries":
        latencies = []
        for text in texts[: min(LATENCY_QUERIES, n)]:
            started = time.perf_counter()
            encode([text])
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        result["latency_ms_median"] = round(statistics.median(latencies), 2)
        result["latency_ms_p95"] = round(latencies[int(0.95 * (len(latencies) - 1))], 2)
    return result


def run_quality(precision: str) -> dict:
    """nDCG@10 and recall@10 of one precision on the whole data/debian test split (no cache)."""
    from embedtune.data import load_split
    from embedtune.encoding import EncodeSettings
    from embedtune.evaluate import EvalSettings, evaluate_model

    split = load_split(DATA, "test")
    settings = EvalSettings(metrics=("ndcg@10", "recall@10"), show_progress=False)
    encoding = EncodeSettings(batch_size=BATCH, precision=precision, backend="torch", cache=False)
    result = evaluate_model(None, split, settings, encoding)
    return {"precision": precision, "resolved": result.details["precision"], "seconds": round(result.seconds, 1)} | {
        name: round(value, 4) for name, value in result.metrics.items()
    }


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _cosines(vectors: Path, variants: tuple[str, ...], peer: str) -> dict:
    """Per variant: cosine to the peer's vectors (min, mean) per kind, and ``top10``: the share of the
    peer's top 10 documents (of the sample) for each sample query that the variant's vectors also rank
    in their top 10, the agreement the quality bound is stated in."""
    import numpy as np

    found = {}
    for kind in KINDS:
        reference = np.load(vectors / f"{peer}.{kind}.npy")
        for variant in variants:
            cos = np.sum(np.load(vectors / f"{variant}.{kind}.npy") * reference, axis=1)
            stats = {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 6)}
            found.setdefault(variant, {})[kind] = stats

    def top10(variant: str) -> np.ndarray:
        scores = np.load(vectors / f"{variant}.queries.npy") @ np.load(vectors / f"{variant}.documents.npy").T
        return np.argpartition(-scores, 10, axis=1)[:, :10]

    expected = top10(peer)
    for variant in variants:
        got = top10(variant)
        shared = [len(set(a) & set(b)) for a, b in zip(expected, got, strict=True)]
        found[variant]["top10"] = round(float(np.mean(shared)) / 10, 4)
    return found


def limit(summary: dict) -> dict | None:
    """``auto``'s documents/s against the fastest reference row whose top-10 agreement meets the bound."""
    speed, cosine = summary["speed"], summary["cosine"]
    auto = "auto" if "auto" in speed else "bf16" if summary["auto"] == "bf16" else "fp32"
    meeting = [v for v in REFERENCES if v in speed and cosine[v]["top10"] >= MIN_TOP10]
    if auto not in speed or not meeting:
        return None
    fastest = max(meeting, key=lambda v: speed[v]["documents"]["texts_per_s"])
    ratio = speed[auto]["documents"]["texts_per_s"] / speed[fastest]["documents"]["texts_per_s"]
    return {"auto": auto, "fastest_reference": fastest, "ratio": round(ratio, 3)}


def _markdown(summary: dict) -> str:
    peer = summary["peer"]
    speed = summary["speed"]
    lines = [
        "# Encoding speed (texts/s)",
        "",
        f"all-MiniLM-L6-v2 (256-token limit), batch {BATCH}, seeded samples of {summary['texts']} data/debian "
        f"documents and {summary['texts']} queries, {summary['repeats']} alternating repeats (median shown); "
        f"each variant in its own process; {summary['machine']}, {summary['threads']} torch threads. "
        f"Peer: sentence-transformers `encode()` {peer.removeprefix('st-')}. `auto` here: {summary['auto']}.",
        "",
        "| variant | documents/s | vs peer | queries/s | vs peer | query latency, batch 1 (median / p95 ms) "
        "| first calls (s) | min cosine to peer (docs / queries) | top-10 agreement with peer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in summary["variants"]:
        row = speed[variant]
        d, q = row["documents"], row["queries"]
        cos = summary["cosine"][variant]
        lines.append(
            f"| {variant} | {d['texts_per_s']:.1f} | {d['texts_per_s'] / speed[peer]['documents']['texts_per_s']:.2f}x "
            f"| {q['texts_per_s']:.1f} | {q['texts_per_s'] / speed[peer]['queries']['texts_per_s']:.2f}x "
            f"| {q['latency_ms_median']:.1f} / {q['latency_ms_p95']:.1f} | {d['first_call_seconds']:.1f} "
            f"| {cos['documents']['min']:.5f} / {cos['queries']['min']:.5f} | {cos['top10']:.4f} |"
        )
    lines += [
        "",
        f"Top-10 agreement: for each of the {summary['texts']} sample queries, the share of the peer's top 10 of "
        f"the {summary['texts']} sample documents that the variant also ranks in its top 10. Reference rows: "
        f"{', '.join(v for v in REFERENCES if v in speed)}; a reference row counts if its agreement is at least "
        f"{MIN_TOP10}.",
    ]
    if summary.get("limit"):
        lim = summary["limit"]
        lines.append(
            f"`auto` ({summary.get('auto_backend') or lim['auto']}) encodes documents at **{lim['ratio']:.2f}x** the "
            f"fastest reference row that meets the bound ({lim['fastest_reference']})."
        )
    if summary.get("profile"):
        lines += ["", "## Where the time goes (documents, seconds of one encode call)", ""]
        names = ["length pass", "tokenisation", "model", "transformer", "other"]
        lines += ["| variant | total | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for row in summary["profile"]:
            cells = " | ".join(f"{row.get(n, 0):.2f} ({row.get(n, 0) / row['total_s']:.0%})" for n in names)
            lines.append(f"| {row['variant']} | {row['total_s']:.2f} | {cells} |")
        lines += [
            "",
            "`model` is the model call with pooling; `transformer` the part of it spent in the transformer; "
            "`other` the rest of the call (sorting, normalising, copying out).",
        ]
    if summary.get("quality"):
        lines += [
            "",
            "## Retrieval quality on data/debian test (60,594 documents, 2,816 queries, exact search)",
            "",
            "| precision | runs as | nDCG@10 | recall@10 | Δ nDCG@10 vs fp32 | evaluation s |",
            "|---|---|---|---|---|---|",
        ]
        base = summary["quality"]["fp32"]["ndcg@10"]
        for precision, q in summary["quality"].items():
            lines.append(
                f"| {precision} | {q['resolved']} | {q['ndcg@10']:.4f} | {q['recall@10']:.4f} "
                f"| {q['ndcg@10'] - base:+.4f} | {q['seconds']:.0f} |"
            )
    lines += ["", f"Command: `{summary['command']}`", ""]
    return "\n".join(lines)


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = summary["variants"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, KINDS, strict=True):
        values = [summary["speed"][v][kind]["texts_per_s"] for v in variants]
        peer = summary["speed"][summary["peer"]][kind]["texts_per_s"]
        bars = ax.bar(variants, values, color=["0.6" if v.startswith("st-") else "C0" for v in variants])
        ax.bar_label(bars, labels=[f"{v:.0f}\n{v / peer:.2f}x" for v in values], fontsize=8)
        ax.set_title(f"{kind} ({summary['texts']} texts, batch {BATCH})", fontsize=10)
        ax.set_ylabel("texts/s")
        ax.set_ylim(0, max(values) * 1.25)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.suptitle(f"Encoding speed, all-MiniLM-L6-v2 — {summary['machine']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, help="alternating repeats (default 2, --quick 1)")
    parser.add_argument("--texts", type=int, help=f"documents and queries in each sample (default {SAMPLE})")
    parser.add_argument("--variants", help="comma-separated subset of the variants")
    parser.add_argument("--quality", action="store_true", help="also nDCG@10 / recall@10 on the whole test split")
    parser.add_argument(
        "--quality-only", action="store_true", help="add the quality part to the stored speed run (results/*.json)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 64 texts, 1 repeat, no compiling unless named; no files"
    )
    parser.add_argument("--run", help=argparse.SUPPRESS)  # VARIANT:KIND:N:VECTORS in a child process
    parser.add_argument("--run-quality", help=argparse.SUPPRESS)  # PRECISION in a child process
    parser.add_argument("--run-profile", help=argparse.SUPPRESS)  # VARIANT:N in a child process
    parser.add_argument(
        "--profile", action="store_true", help="also time each stage of bf16 and the plain bf16 loop (documents)"
    )
    args = parser.parse_args()
    if args.run:
        variant, kind, n, vectors = args.run.split(":", 3)
        print(json.dumps(run_variant(variant, kind, int(n), Path(vectors))))
        return
    if args.run_quality:
        print(json.dumps(run_quality(args.run_quality)))
        return
    if args.run_profile:
        variant, n = args.run_profile.split(":")
        print(json.dumps(profile_stages(variant, int(n))))
        return

    import torch

    gpu = torch.cuda.is_available()
    if args.quality_only:  # quality beside the stored speed run (slow, and not disturbed by other load)
        summary = json.loads((RESULTS / "encoding_speed.json").read_text())
        summary["command"] += " && python benchmarks/encoding_speed.py --quality-only"
    else:
        summary = _speed_run(args, gpu)
    if args.quality or args.quality_only:
        precisions = ("fp32", "fp16", "bf16") if gpu else ("fp32", "auto", "int8")
        summary["quality"] = {}
        for precision in precisions:
            summary["quality"][precision] = _child(["--run-quality", precision])
            print(f"quality {precision}: {summary['quality'][precision]}", flush=True)
    report = _markdown(summary)
    print(report)
    if args.quick:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "encoding_speed.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "encoding_speed.md").write_text(report)
    _plot(summary, RESULTS / "encoding_speed.png")


def _speed_run(args: argparse.Namespace, gpu: bool) -> dict:
    """Every variant timed in its own processes, alternating over the repeats; the summary of the run."""
    from embedtune.encoding import resolve_precision

    variants = GPU_VARIANTS if gpu else CPU_VARIANTS
    if args.quick:
        args.quality = False
        variants = tuple(v for v in variants if v != "bf16-compiled")
    args.texts = args.texts or (QUICK_SAMPLE if args.quick else SAMPLE)
    args.repeats = args.repeats or (1 if args.quick else 2)
    if args.variants:
        variants = tuple(args.variants.split(","))
    peer = "st-fp16" if gpu else "st-fp32"
    if peer not in variants:
        variants = (peer, *variants)
    runs: dict[str, dict[str, list[dict]]] = {v: {k: [] for k in KINDS} for v in variants}
    with tempfile.TemporaryDirectory() as scratch:
        vectors = Path(scratch)
        for repeat in range(args.repeats):
            order = variants if repeat % 2 == 0 else tuple(reversed(variants))
            for variant in order:
                for kind in KINDS:
                    result = _child(["--run", f"{variant}:{kind}:{args.texts}:{vectors / f'{variant}.{kind}.npy'}"])
                    runs[variant][kind].append(result)
                    print(f"repeat {repeat + 1} {variant} {kind}: {result['texts_per_s']:.1f} texts/s", flush=True)
        cosine = _cosines(vectors, variants, peer)
    speed = {
        v: {
            k: {
                key: statistics.median(r[key] for r in rs)
                for key in rs[0]
                if key not in ("variant", "kind", "texts", "threads", "backend")
            }
            for k, rs in kinds.items()
        }
        for v, kinds in runs.items()
    }
    summary = {
        "machine": machine(),
        "threads": runs[peer]["documents"][0]["threads"],
        "texts": args.texts,
        "repeats": args.repeats,
        "batch_size": BATCH,
        "peer": peer,
        "auto": resolve_precision("auto", "cuda" if gpu else "cpu"),
        "auto_backend": runs["auto"]["documents"][0].get("backend") if "auto" in runs else None,
        "variants": list(variants),
        "speed": speed,
        "cosine": cosine,
        "runs": runs,
        "command": "python benchmarks/encoding_speed.py " + " ".join(sys.argv[1:]),
    }
    summary["limit"] = limit(summary)
    if args.profile and not gpu:
        summary["profile"] = [_child(["--run-profile", f"{v}:{args.texts}"]) for v in ("bf16", "torch-bf16-loop")]
    return summary


if __name__ == "__main__":
    main()
