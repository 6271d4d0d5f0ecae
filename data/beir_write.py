"""Writing a built BEIR folder byte for byte the same on every run: shared by the dataset builders here.

``corpus.jsonl.gz`` and ``queries.jsonl.gz`` are gzipped with a zero timestamp and no file name, and the
folder is written beside its target and swapped in, so a failed build leaves the previous one whole.
``hash_unit`` places a split unit by a salted SHA-256, so the train/test assignment never depends on
the order the source is read in.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path


def hash_unit(salt: str, key: str) -> float:
    """A stable number in [0, 1) for ``key``: below a split's share, the key goes to that split."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
    path.write_bytes(buf.getvalue())


def write_dataset(out_dir: Path, corpus: list[dict], queries: list[dict], qrels: dict[str, list[str]]) -> None:
    """Write the folder beside ``out_dir``, then swap it in, so a failed build leaves the old one whole.

    ``qrels`` maps a split to its query ids: each query's one relevant document shares its id.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-new-", dir=out_dir.parent))
    try:
        (tmp / "qrels").mkdir()
        write_jsonl_gz(tmp / "corpus.jsonl.gz", corpus)
        write_jsonl_gz(tmp / "queries.jsonl.gz", queries)
        for split, ids in qrels.items():
            rows = [f"{q}\t{q}\t1" for q in ids]
            (tmp / "qrels" / f"{split}.tsv").write_text(
                "\n".join(["query-id\tcorpus-id\tscore", *rows]) + "\n", encoding="utf-8"
            )
        tmp.chmod(0o755)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-old-", dir=out_dir.parent))
            out_dir.rename(old / out_dir.name)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
