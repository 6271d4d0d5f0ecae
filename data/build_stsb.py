"""Build ``data/stsb-retrieval``, a zero-shot retrieval split, from the STS Benchmark train and dev files.

Reproducible byte for byte (standard library only, sorted iteration, gzip with a zero timestamp).
Run from the repository root::

    python data/build_stsb.py ../shared/datasets/stsbenchmark

Design (see data/README.md for the why):

* document = one distinct sentence of any pair; sentences equal up to case, punctuation and
  whitespace are one document (else a trivial variant would be a "wrong" answer);
* a pair's similarity is symmetric, so each pair is an edge both ways; between two documents the
  highest score of any pair counts;
* query = a document with at least one partner scored >= 4 ("mostly equivalent"); its relevant
  documents are its partners scored >= 3, graded ``floor(score) - 2``: 1 = roughly equivalent
  (3 <= s < 4), 2 = mostly equivalent (4 <= s < 5), 3 = completely equivalent (5);
* a query's id is its document's id, so its own text is in the corpus: evaluate with
  ``--ignore-own-id``, as BEIR does for ArguAna.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

FILES = ("sts-train.csv", "sts-dev.csv")
# Sources whose text may be redistributed here (STS-B's LICENSE.txt): image captions and SNLI
# (CC BY-SA), news headlines (Europe Media Monitor, acknowledged in data/README.md). Left out:
# MSR Paraphrase and MSR Video (Microsoft Research licence to be agreed per user), DEFT (no licence
# stated) and Stack Exchange posts (CC BY-SA 3.0 with per-author attribution links we cannot give).
SOURCES = ("headlines", "images", "track5.en-en")
QUERY_MIN_SCORE = 4.0
RELEVANT_MIN_SCORE = 3.0
_NON_WORD = re.compile(r"[\W_]+")


def key(sentence: str) -> str:
    """Sentences with the same key are the same document: case, punctuation and spacing ignored."""
    return " ".join(_NON_WORD.sub(" ", sentence.lower()).split())


def read_pairs(source_dir: Path) -> list[tuple[str, str, str, float, str, str]]:
    """``(file, genre, source, score, sentence1, sentence2)`` rows; extra licence columns are ignored."""
    rows = []
    for name in FILES:
        with (source_dir / name).open(encoding="utf-8", newline="") as f:
            for fields in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                genre, source, _year, _id, score, s1, s2 = fields[:7]
                if source not in SOURCES:
                    continue
                rows.append((name, genre, source, float(score), s1.strip(), s2.strip()))
    return rows


def _write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
    path.write_bytes(buf.getvalue())


def build(source_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write corpus, queries and ``qrels/test.tsv`` under ``out_dir``; return counts for the README."""
    pairs = read_pairs(source_dir)
    texts: dict[str, set[str]] = defaultdict(set)  # key -> surface forms
    genres: dict[str, set[str]] = defaultdict(set)
    best: dict[tuple[str, str], float] = {}  # (key, key) both ways -> highest score
    same_text_pairs = 0
    for _file, genre, source, score, s1, s2 in pairs:
        k1, k2 = key(s1), key(s2)
        if not k1 or not k2:
            continue
        for k, s in ((k1, s1), (k2, s2)):
            texts[k].add(s)
            genres[k].add(f"{genre}/{source}")
        if k1 == k2:
            same_text_pairs += 1  # a sentence paired with itself (up to punctuation): no retrieval task
            continue
        for a, b in ((k1, k2), (k2, k1)):
            best[a, b] = max(best.get((a, b), score), score)

    keys = sorted(texts)
    doc_id = {k: f"sts{i:05d}" for i, k in enumerate(keys)}
    corpus = [
        {"_id": doc_id[k], "title": "", "text": min(texts[k]), "metadata": {"sources": sorted(genres[k])}} for k in keys
    ]
    partners: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (a, b), score in sorted(best.items()):
        partners[a].append((b, score))
    queries, qrels = [], []
    for k in keys:
        if not any(score >= QUERY_MIN_SCORE for _, score in partners[k]):
            continue
        queries.append({"_id": doc_id[k], "text": min(texts[k])})
        for other, score in sorted(partners[k], key=lambda p: doc_id[p[0]]):
            if score >= RELEVANT_MIN_SCORE:
                qrels.append((doc_id[k], doc_id[other], math.floor(score) - 2))

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "qrels").mkdir(exist_ok=True)
    _write_jsonl_gz(out_dir / "corpus.jsonl.gz", corpus)
    _write_jsonl_gz(out_dir / "queries.jsonl.gz", queries)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, d, g in qrels]
    (out_dir / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    counts = {
        "pairs": len(pairs),
        "same_text_pairs": same_text_pairs,
        "documents": len(corpus),
        "queries": len(queries),
        "qrels": len(qrels),
    }
    for grade in (1, 2, 3):
        counts[f"qrels_grade_{grade}"] = sum(1 for *_, g in qrels if g == grade)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with sts-train.csv and sts-dev.csv")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "stsb-retrieval")
    args = parser.parse_args(argv)
    json.dump(build(args.source, args.out), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
