"""What an index is, on disk: the manifest that names its data files, and the names of those files.

An index is a directory ``indexes/NAME/`` holding one *generation* of two data files and the
manifest that names them:

* ``index.G.faiss`` — the vectors (type chosen by :mod:`embedtune.index.types`), keyed by 64-bit FAISS ids;
* ``docs.G.sqlite`` — ids, texts, text hashes and metadata by FAISS id (:mod:`embedtune.index.store`);
* ``lexical.G.npz`` — where the index has one, its BM25 side (:mod:`embedtune.index.lexical`);
* ``manifest.json`` — the model (path, content fingerprint, dimension, pooling, normalisation,
  prompts), the corpus, the index type and why it was chosen, calibrated search knobs, and the
  size and SHA-256 of both data files.

The manifest is the commit point of every write (:mod:`embedtune.index.generations`): it is replaced
atomically, and a reader trusts no file it does not name. A manifest of another format, or with
fields this version does not know, is refused rather than half-read.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from embedtune.errors import EmbedtuneError
from embedtune.index.types import IndexSpec
from embedtune.io import write_text_atomic

DEFAULT_INDEXES_DIR = Path("indexes")
MANIFEST_FILE = "manifest.json"
FORMAT = 2


def check_index_name(name: str) -> str:
    """``name`` if it can name a folder directly under the indexes folder, else a one-line error.

    A name is one path component: not empty, no ``/`` or ``\\`` (``a/b`` would make an index that
    listings never show, ``../x`` one outside the indexes folder), not starting with ``.`` (hidden,
    and the prefix of temporaries), printable, at most 200 characters.
    """
    problem = None
    if not isinstance(name, str) or not name.strip():
        problem = "is empty"
    elif "/" in name or "\\" in name or "\0" in name:
        problem = "holds a path separator (an index name is one folder name)"
    elif name.startswith("."):
        problem = "starts with '.' (reserved for temporaries)"
    elif not name.isprintable() or name != name.strip():
        problem = "holds control characters or surrounding spaces"
    elif len(name) > 200:
        problem = "is longer than 200 characters"
    if problem is not None:
        raise EmbedtuneError(f"index name {name!r} {problem}")
    return name


def index_file(generation: int) -> str:
    return f"index.{generation}.faiss"


def store_file(generation: int) -> str:
    return f"docs.{generation}.sqlite"


def now() -> str:
    """The timestamp format of manifests (local time with its UTC offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class Manifest:
    """What an index is: enough to refuse a mismatched model, to check its files and to rebuild it."""

    name: str
    model_path: str
    model_fingerprint: str
    dimension: int
    normalized: bool
    metric: str
    count: int  # live documents
    max_seq_length: int
    precision: str
    corpus_path: str
    corpus_sha256: str
    embedtune_version: str
    created_at: str
    encode_seconds: float
    format: int = FORMAT
    backend: str = "torch"  # what encoded the documents (openvino, torch; shards may mix them: "openvino+torch")
    pooling: str = "unknown"
    prompts: dict[str, str] = field(default_factory=dict)
    query_prompt_name: str | None = None
    document_prompt_name: str | None = None
    index_type: str = "flat"
    index_params: dict[str, int] = field(default_factory=dict)
    choice: str = ""  # why this index type
    train_size: int = 0
    build_seconds: float = 0.0
    search_defaults: dict[str, int] = field(default_factory=dict)  # calibrated nprobe / ef_search
    calibration: dict[str, object] = field(default_factory=dict)
    vectors: int = 0  # FAISS ntotal: live documents plus tombstoned HNSW nodes
    tombstones: int = 0
    generation: int = 1
    files: dict[str, dict[str, object]] = field(default_factory=dict)  # name -> {"bytes", "sha256"}
    updated_at: str = ""
    updates: list[dict[str, object]] = field(default_factory=list)
    lexical: dict[str, object] = field(default_factory=dict)  # the BM25 side's parameters; empty: none
    # Calibration on real queries (embedtune.retrieval.calibration): search modes on a dev split, the
    # chosen fusion and default mode, and the search knob's recall on those queries.
    query_calibration: dict[str, object] = field(default_factory=dict)
    # The model folder relative to the index folder (set at each commit): where the model is looked for
    # when ``model_path`` is gone because the index and its model moved together (another machine).
    model_relative: str = ""

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise EmbedtuneError(f"{path}: unreadable index manifest ({e})") from e
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: object, where: str) -> Manifest:
        """The manifest in ``raw`` (a manifest file's JSON, or a Qdrant collection's copy), checked as
        :meth:`read` checks a file; ``where`` names it in errors."""
        path = where
        if not isinstance(raw, dict):
            raise EmbedtuneError(f"{path}: unreadable index manifest (not a JSON object)")
        if raw.get("format") != FORMAT:
            raise EmbedtuneError(
                f"{path}: index format {raw.get('format', 1)} (this embedtune reads format {FORMAT}); "
                "rebuild it, overwriting the old one"
            )
        unknown = set(raw) - {f.name for f in fields(cls)}
        try:
            if unknown:
                raise TypeError(f"unknown field(s) {', '.join(sorted(unknown))}")
            return cls(**raw)
        except TypeError as e:
            raise EmbedtuneError(f"{path}: unreadable index manifest ({e})") from e

    def write(self, directory: Path) -> None:
        write_text_atomic(Path(directory) / MANIFEST_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @property
    def spec(self) -> IndexSpec:
        return IndexSpec(self.index_type, **self.index_params)

    @property
    def disk_bytes(self) -> int:
        return sum(int(f["bytes"]) for f in self.files.values())

    def describe_search(self) -> str:
        """The index type, its calibrated search defaults and the recall they reach on which probes, in one line."""
        if self.index_type == "flat":
            return "flat (exact search)"
        knobs = ", ".join(f"{k}={v}" for k, v in self.search_defaults.items())
        tuned = f", default {knobs}" if knobs else ""
        c = self.calibration
        # Builds that did not record their probes calibrated on corpus vectors.
        probes = f"{c.get('queries')} {c['probes']}" if "probes" in c else "a corpus sample"
        return f"{self.index_type}{tuned} (recall@10 vs exact on {probes}: {c.get('recall_at_10')})"

    @property
    def default_mode(self) -> str:
        """The search mode used when none is asked for: what calibration chose, else dense."""
        return str(self.query_calibration.get("default_mode", "dense"))

    def describe_hybrid(self) -> list[tuple[str, str]]:
        """Rows on the BM25 side and on the calibration with real queries, when the index has them."""
        c = self.query_calibration
        rows = [
            ("bm25", f"{self.lexical.get('terms', 0):,} terms, k1={self.lexical.get('k1')}, b={self.lexical.get('b')}")
        ]
        if not self.lexical:
            rows = [("bm25", "none (built without bm25): dense search only")]
        elif not self.lexical.get("documents"):
            rows = [("bm25", "empty (every document removed): bm25 and hybrid searches find nothing until an add")]
        if not c:
            return [*rows, ("modes", f"default {self.default_mode}; not calibrated on queries ('index calibrate')")]
        r = c.get("recall_at_10", {})
        held = f", {r['held_out_recall']} on {r['held_out']} held-out ones" if "held_out" in r else ""
        rows.append(
            (
                "queries",
                f"recall@10 vs exact on real queries of {c.get('split')}: {r.get('tuned')} on the {r.get('tuned_on')} "
                f"it was tuned on{held} (target {r.get('target')})",
            )
        )
        if "fusion" in c:
            f, dev = c["fusion"], ", ".join(f"{m} {v:.4f}" for m, v in c.get("ndcg_at_10", {}).items())
            rows.append(
                (
                    "modes",
                    f"default {self.default_mode}; fusion {f.get('method')} (dense weight {f.get('weight')}, depth "
                    f"{f.get('depth')}); nDCG@10 on {c.get('split')} ({c.get('queries')} queries): {dev}",
                )
            )
        return rows

    def _since_built(self) -> str:
        """What the updates changed since the type was chosen: the figures of :attr:`choice` are the build's."""
        if not self.updates:
            return ""
        added = sum(int(u.get("added", 0)) for u in self.updates)
        removed = sum(int(u.get("removed", 0)) for u in self.updates)
        return (
            f" [as built; since then {added:,} added and {removed:,} removed in {len(self.updates)} update(s), "
            f"{self.count:,} now: a rebuild chooses again]"
        )

    def describe(self, path: Path, *, verified: bool = False) -> list[tuple[str, str]]:
        """(label, text) rows saying what the index holds, which model made it, its type and why."""
        params = ", ".join(f"{k}={v}" for k, v in self.index_params.items()) or "no parameters"
        memory = self.spec.bytes_per_vector(self.dimension) * self.vectors
        prompts = ", ".join(f"{k}={v!r}" for k, v in self.prompts.items()) or "none"
        removed = f" ({self.tombstones:,} removed, filtered at search)" if self.tombstones else ""
        trained = f" ({params}); trained on {self.train_size:,} vectors" if self.train_size else ""
        return [
            ("path", str(path)),
            ("documents", f"{self.count:,}{removed}"),
            ("type", f"{self.index_type}{trained}"),
            ("why", self.choice + self._since_built()),
            ("search", self.describe_search()),
            *self.describe_hybrid(),
            ("size", f"{self.disk_bytes / 1e6:,.1f} MB on disk, ~{memory / 1e6:,.1f} MB of vectors in memory"),
            ("model", f"{self.model_path} (fingerprint {self.model_fingerprint[:12]})"),
            (
                "encoding",
                f"{self.dimension} dims, {self.pooling} pooling, normalised, {self.max_seq_length} tokens, "
                f"{self.precision} ({self.backend})",
            ),
            ("prompts", f"{prompts}; queries use {self.query_prompt_name}, documents {self.document_prompt_name}"),
            ("corpus", f"{self.corpus_path} (sha256 {self.corpus_sha256[:12]})"),
            ("built", f"{self.created_at} by embedtune {self.embedtune_version}; {len(self.updates)} update(s) since"),
            ("files", ", ".join(sorted(self.files)) + (" (SHA-256 verified)" if verified else "")),
        ]
