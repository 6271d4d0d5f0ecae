"""FAISS index types: how each is made, trained, sized, chosen and tuned.

Every type searches inner product over L2-normalised vectors (= cosine) and stores 64-bit ids (the
document store's row ids), so results can be looked up and documents removed by id:

==========  ================================================================  ==================
type        what                                                              bytes per vector
==========  ================================================================  ==================
flat        exact search                                                      4·d
sq8         exact scan of int8 scalar-quantised vectors (4x smaller)          d
hnsw        graph search (M links per node) over float vectors                4·d + ~8·M
ivf-flat    k-means cells, ``nprobe`` of ``nlist`` cells scanned              4·d + 8
ivf-sq8     the same over int8 vectors                                        d + 8
ivf-pq      the same over product-quantised codes (4-bit fast scan)           pq_m / 2 + 8
==========  ================================================================  ==================

Binary (1-bit) codes are not offered: on 384-dimension sentence embeddings they lose too much recall
to be useful without re-scoring by float vectors, which is what they were meant to avoid storing.

The search-time knobs (``nprobe`` for IVF types, ``ef_search`` for HNSW) are calibrated at build time
(:func:`embedtune.index.knobs.calibrate`): the smallest value, plus a step, whose recall@10 against
exact search reaches the target on query-like probes (judged dev queries, else titles or first
sentences). :class:`BuildSettings` declares the build options once (help, choices, ranges) for the
Python API, config files and the command line.

How the types compare in build time, memory, speed and recall is measured by
``benchmarks/index_types.py``; the figures are in ``benchmarks/results/index_types.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.settings import setting, validate

INDEX_TYPES: tuple[str, ...] = ("flat", "sq8", "hnsw", "ivf-flat", "ivf-sq8", "ivf-pq")
IVF_TYPES = ("ivf-flat", "ivf-sq8", "ivf-pq")
# Below this many vectors auto picks exact search: a query scans them fast enough that an approximate
# index buys nothing (benchmarks/results/index_types.md).
EXACT_MAX_VECTORS = 100_000
MIN_POINTS_PER_CELL = 39  # FAISS's k-means warns below 39 training points per centroid
TRAIN_POINTS_PER_CELL = 64
DEFAULT_TARGET_RECALL = 0.99
EF_SEARCH_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True)
class IndexSpec:
    """One index type and its build parameters (``None`` = not used by this type)."""

    kind: str
    nlist: int | None = None  # IVF: number of k-means cells
    pq_m: int | None = None  # IVF-PQ: sub-quantisers (4 bits each)
    hnsw_m: int | None = None  # HNSW: links per node
    ef_construction: int | None = None  # HNSW: candidate list while building

    def factory_string(self, dimension: int) -> str:
        """The ``faiss.index_factory`` description; flat and graph indexes get an id map."""
        return {
            "flat": "IDMap2,Flat",
            "sq8": "IDMap2,SQ8",
            "hnsw": f"IDMap2,HNSW{self.hnsw_m},Flat",
            "ivf-flat": f"IVF{self.nlist},Flat",
            "ivf-sq8": f"IVF{self.nlist},SQ8",
            "ivf-pq": f"IVF{self.nlist},PQ{self.pq_m}x4fs",
        }[self.kind]

    @property
    def supports_removal(self) -> bool:
        """HNSW graphs cannot drop nodes: removed documents are filtered out at search time instead."""
        return self.kind != "hnsw"

    @property
    def needs_training(self) -> bool:
        return self.kind in IVF_TYPES or self.kind == "sq8"

    def params(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "kind" and v is not None}

    def bytes_per_vector(self, dimension: int) -> float:
        """Approximate resident memory per vector, for the automatic choice and ``index info``."""
        return {
            "flat": 4 * dimension + 8,
            "sq8": dimension + 8,
            "hnsw": 4 * dimension + 8 + 2 * 4 * (self.hnsw_m or 32) * 1.05,
            "ivf-flat": 4 * dimension + 8,
            "ivf-sq8": dimension + 8,
            "ivf-pq": (self.pq_m or dimension // 4) / 2 + 8,
        }[self.kind]


def default_nlist(n: int) -> int:
    """About 4·sqrt(n) cells (FAISS's guideline), but never fewer than 39 training points per cell."""
    return max(1, min(int(4 * math.sqrt(n)), n // MIN_POINTS_PER_CELL))


def default_pq_m(dimension: int) -> int:
    """4 dimensions per 4-bit sub-quantiser (d/4 codes of half a byte: 8x smaller than float32)."""
    for m in range(max(1, dimension // 4), 0, -1):
        if dimension % m == 0:
            return m
    return 1


def make_spec(kind: str, n: int, dimension: int, **overrides: int | None) -> IndexSpec:
    """``kind`` with defaults sized for ``n`` vectors, overridden by any non-``None`` parameter."""
    if kind not in INDEX_TYPES:
        raise EmbedtuneError(f"unknown index type '{kind}' (choose from auto, {', '.join(INDEX_TYPES)})")
    defaults: dict[str, int] = {}
    if kind in IVF_TYPES:
        defaults["nlist"] = default_nlist(n)
    if kind == "ivf-pq":
        defaults["pq_m"] = default_pq_m(dimension)
    if kind == "hnsw":
        defaults |= {"hnsw_m": 32, "ef_construction": 64}
    unknown = [k for k, v in overrides.items() if v is not None and k not in defaults]
    if unknown:
        raise EmbedtuneError(f"index type '{kind}' has no parameter {', '.join(unknown)}")
    spec = IndexSpec(kind, **(defaults | {k: v for k, v in overrides.items() if v is not None}))
    _check_spec(spec, n, dimension)
    return spec


def _check_spec(spec: IndexSpec, n: int, dimension: int) -> None:
    """Turn what FAISS would assert on (or silently degrade with) into a clear error."""
    if spec.kind in IVF_TYPES and not 1 <= spec.nlist <= n:
        raise EmbedtuneError(f"{spec.kind} with nlist={spec.nlist} needs at least that many documents, got {n}")
    if spec.kind == "ivf-pq":
        if dimension % spec.pq_m:
            raise EmbedtuneError(f"pq_m={spec.pq_m} must divide the dimension {dimension}")
        if n < 16:
            raise EmbedtuneError(f"ivf-pq needs at least 16 documents to train its 4-bit codebooks, got {n}")
    for name, value in spec.params().items():
        if value < 1:
            raise EmbedtuneError(f"{name} must be positive, got {value}")


def choose_spec(n: int, dimension: int, memory_budget: int) -> tuple[IndexSpec, str]:
    """Pick a type for ``n`` vectors within ``memory_budget`` bytes, and say why.

    The order of preference follows ``benchmarks/results/index_types.md``: HNSW did not reach the
    default target recall on the largest benchmark corpus at any ``ef_search``, IVF-flat did.
    """
    mb = n * 4 * dimension / 1e6
    size = f"{n:,} vectors x {dimension} dims = {mb:,.0f} MB as float32, memory budget {memory_budget / 1e9:.1f} GB"
    if n <= EXACT_MAX_VECTORS and n * 4 * dimension * 1.1 <= memory_budget:
        return make_spec("flat", n, dimension), (
            f"{size}; up to {EXACT_MAX_VECTORS:,} vectors exact search is fast enough, so flat (exact)"
        )
    for kind, why in (
        (
            "ivf-flat",
            "float vectors fit in memory: IVF-flat, whose nprobe can always be calibrated to the target recall "
            "(HNSW's ef_search may fall short of it on large corpora) and which deletes removed documents outright",
        ),
        ("ivf-sq8", "float vectors do not fit, int8 vectors do: IVF over 4x smaller scalar-quantised vectors"),
    ):
        spec = make_spec(kind, n, dimension)
        if n * spec.bytes_per_vector(dimension) * 1.1 <= memory_budget:
            return spec, f"{size}; {why}"
    why = "only compressed codes fit: IVF over 4-bit product-quantised codes (recall is lower)"
    return make_spec("ivf-pq", n, dimension), f"{size}; {why}"


_SPEC_PARAMS = ("nlist", "pq_m", "hnsw_m", "ef_construction")


@dataclass(frozen=True)
class BuildSettings:
    """How an index is built, apart from how its texts are encoded (:class:`~embedtune.encoding.EncodeSettings`).

    ``index_type`` is one of :data:`INDEX_TYPES` or ``auto`` (chosen from the corpus size and
    ``memory_budget``); the type's parameters left ``None`` are sized for the corpus. IVF and SQ types
    train on a seeded sample of ``train_size`` vectors; the search knob is calibrated to
    ``target_recall`` of exact search.
    """

    index_type: str = setting(
        "auto",
        help="flat = exact; sq8 = exact over int8 vectors; hnsw = graph; ivf-flat / ivf-sq8 / ivf-pq = k-means cells "
        "over float / int8 / 4-bit PQ codes. auto picks from the corpus size and the memory budget ('index info' "
        "says why).",
        choices=("auto", *INDEX_TYPES),
        flag="--type",
    )
    nlist: int | None = setting(None, help="IVF cells (default ~4*sqrt(documents)).", min=1)
    pq_m: int | None = setting(None, help="IVF-PQ sub-quantisers (default dims/4).", min=1)
    hnsw_m: int | None = setting(None, help="HNSW links per node (default 32).", min=2)
    ef_construction: int | None = setting(None, help="HNSW build beam (default 64).", min=1)
    train_size: int | None = setting(
        None, help="Vectors sampled to train IVF/SQ/PQ quantisers (default 64 per IVF cell).", min=1
    )
    memory_budget: float | None = setting(
        None, help="GB the index may use, for type auto (default: half the RAM).", above=0
    )
    target_recall: float = setting(
        DEFAULT_TARGET_RECALL,
        help="recall@10 against exact search that the default nprobe / efSearch is calibrated to reach.",
        above=0,
        max=1,
    )

    def __post_init__(self) -> None:
        validate(self)
        given = [k for k, v in self.spec_params.items() if v is not None]
        if self.index_type == "auto" and given:
            raise EmbedtuneError(f"index parameter(s) {', '.join(given)} need an explicit index type, not auto")

    @property
    def spec_params(self) -> dict[str, int | None]:
        """The :class:`IndexSpec` parameters as given (``None`` = sized for the corpus)."""
        return {name: getattr(self, name) for name in _SPEC_PARAMS}

    def choose(self, n: int, dimension: int) -> tuple[IndexSpec, str]:
        """The spec for ``n`` vectors of ``dimension``, and why it was chosen."""
        if self.index_type != "auto":
            spec = make_spec(self.index_type, n, dimension, **self.spec_params)
            return spec, f"chosen explicitly (type {self.index_type})"
        if self.memory_budget is not None:
            budget = int(self.memory_budget * 1e9)
        else:
            import psutil

            budget = psutil.virtual_memory().total // 2
        return choose_spec(n, dimension, budget)


def create_index(spec: IndexSpec, dimension: int):
    import faiss

    index = faiss.index_factory(dimension, spec.factory_string(dimension), faiss.METRIC_INNER_PRODUCT)
    if spec.kind == "hnsw":
        hnsw_of(index).hnsw.efConstruction = spec.ef_construction
    return index


def hnsw_of(index):
    """The HNSW index inside its id map."""
    import faiss

    return faiss.downcast_index(faiss.downcast_index(index).index)


def training_sample(vectors: np.ndarray, spec: IndexSpec, seed: int = 0, size: int | None = None) -> np.ndarray:
    """A seeded random sample for k-means / quantiser training (64 points per IVF cell by default)."""
    n = len(vectors)
    size = size or (TRAIN_POINTS_PER_CELL * spec.nlist if spec.kind in IVF_TYPES else 50_000)
    if size >= n:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(vectors[rows])


def search_parameters(spec_kind: str, knobs: dict[str, int], selector=None):
    """FAISS per-query parameters for ``knobs`` (``nprobe`` / ``ef_search``) and an optional id filter."""
    import faiss

    if spec_kind in IVF_TYPES:
        return faiss.SearchParametersIVF(nprobe=int(knobs["nprobe"]), sel=selector)
    if spec_kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=int(knobs["ef_search"]), sel=selector)
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def set_search_defaults(faiss_index, kind: str, knobs: dict[str, int]) -> None:
    """Store the calibrated knob in the FAISS object, so that the written ``.faiss`` file alone, read by plain
    ``faiss.read_index``, searches with the calibrated recall (not FAISS's nprobe 1 / efSearch 16)."""
    import faiss

    if kind in IVF_TYPES and "nprobe" in knobs:
        faiss.extract_index_ivf(faiss_index).nprobe = int(knobs["nprobe"])
    elif kind == "hnsw" and "ef_search" in knobs:
        hnsw_of(faiss_index).hnsw.efSearch = int(knobs["ef_search"])


def knob_name(kind: str) -> str | None:
    return "nprobe" if kind in IVF_TYPES else "ef_search" if kind == "hnsw" else None


def knob_steps(spec: IndexSpec) -> list[int]:
    """Candidate values of the type's search knob, smallest (fastest) first."""
    if spec.kind in IVF_TYPES:
        steps = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
        return [s for s in steps if s < spec.nlist] + [spec.nlist]
    return list(EF_SEARCH_STEPS) if spec.kind == "hnsw" else []
