"""Build embedtune's default dataset, ``data/debian``, from the Debian bookworm description dump.

Reproducible byte for byte: the input is a frozen file, every choice below is deterministic
(sorted iteration, hash-based split), and gzip is written with a zero timestamp and no file name.

Run from the repository root::

    python data/build_debian.py ../shared/datasets/debian-descriptions/descriptions.jsonl.gz

Design (see data/README.md for the why):

* document = one distinct long description (whitespace-normalised); packages sharing a text are
  merged into one document, so an identical text is never a false negative of itself;
* query = one distinct synopsis (case- and whitespace-normalised) within a split; every document
  of every package carrying that synopsis is relevant, so qrels are honest for repeated synopses;
* split by connected component of source packages that share a synopsis or a description text:
  no source package, no query text and no document text sits on two sides; components larger
  than ``MAX_EVAL_COMPONENT`` packages (gcc's multilib family, transitional packages) go to train
  so that dev/test measure ordinary packages rather than one giant cluster.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
from collections import defaultdict
from pathlib import Path

TEST_FRACTION = 0.05
DEV_FRACTION = 0.05
MAX_EVAL_COMPONENT = 20
SPLIT_SALT = "embedtune-debian-v1"


def normalise(text: str) -> str:
    """Collapse whitespace: two texts equal after this are the same document."""
    return " ".join(text.split())


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Smallest name wins so that component keys do not depend on input order.
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def _split_of(component: str, size: int) -> str:
    if size > MAX_EVAL_COMPONENT:
        return "train"
    digest = hashlib.sha256(f"{SPLIT_SALT}:{component}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < TEST_FRACTION:
        return "test"
    if u < TEST_FRACTION + DEV_FRACTION:
        return "dev"
    return "train"


def _unique_id(name: str, taken: set[str]) -> str:
    """``name``, or ``name#2``, ``name#3``...: a package can carry several description variants."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    taken.add(candidate)
    return candidate


def _write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n").encode())
    path.write_bytes(buf.getvalue())


def build(source_file: Path, out_dir: Path) -> dict[str, int]:
    """Write corpus, queries and qrels under ``out_dir``; return counts for the README."""
    with gzip.open(source_file, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    records.sort(key=lambda r: (r["package"], r["description_md5"]))
    dropped_empty = [r["package"] for r in records if not r["description"].strip()]
    records = [r for r in records if r["description"].strip()]

    uf = _UnionFind()
    by_synopsis: dict[str, list[dict]] = defaultdict(list)
    by_text: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        uf.find(r["source"])
        by_synopsis[normalise(r["synopsis"]).lower()].append(r)
        by_text[normalise(r["description"])].append(r)
    for group in (*by_synopsis.values(), *by_text.values()):
        for r in group[1:]:
            uf.union(group[0]["source"], r["source"])

    component_size: dict[str, int] = defaultdict(int)
    for r in records:
        component_size[uf.find(r["source"])] += 1

    def split_of(r: dict) -> str:
        root = uf.find(r["source"])
        return _split_of(root, component_size[root])

    # Documents: first package (by name) of each distinct text names the document.
    doc_id_of_text: dict[str, str] = {}
    doc_ids: set[str] = set()
    corpus = []
    for text, group in sorted(by_text.items(), key=lambda kv: kv[1][0]["package"]):
        doc_id = _unique_id(group[0]["package"], doc_ids)
        doc_id_of_text[text] = doc_id
        corpus.append(
            {
                "_id": doc_id,
                "title": "",
                "text": group[0]["description"],
                "metadata": {
                    "packages": [r["package"] for r in group],
                    "sources": sorted({r["source"] for r in group}),
                    "section": group[0]["section"],
                },
            }
        )

    queries = []
    query_ids: set[str] = set()
    qrels: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
    for _, group in sorted(by_synopsis.items(), key=lambda kv: kv[1][0]["package"]):
        split = split_of(group[0])
        assert all(split_of(r) == split for r in group), "component split is inconsistent"
        query_id = _unique_id(group[0]["package"], query_ids)
        queries.append(
            {
                "_id": query_id,
                "text": group[0]["synopsis"],
                "metadata": {"packages": [r["package"] for r in group], "split": split},
            }
        )
        relevant = sorted({doc_id_of_text[normalise(r["description"])] for r in group})
        qrels[split].extend((query_id, doc_id) for doc_id in relevant)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "qrels").mkdir(exist_ok=True)
    _write_jsonl_gz(out_dir / "corpus.jsonl.gz", corpus)
    _write_jsonl_gz(out_dir / "queries.jsonl.gz", queries)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in rows]
        (out_dir / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    counts = {
        "source_records": len(records) + len(dropped_empty),
        "dropped_empty_descriptions": len(dropped_empty),
        "documents": len(corpus),
        "merged_duplicate_packages": len(records) - len(corpus),
        "queries": len(queries),
    }
    for split, rows in qrels.items():
        counts[f"{split}_queries"] = len({q for q, _ in rows})
        counts[f"{split}_qrels"] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="descriptions.jsonl.gz from the Debian dump")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "debian")
    args = parser.parse_args(argv)
    counts = build(args.source, args.out)
    json.dump(counts, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
