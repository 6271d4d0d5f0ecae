"""Turning texts into normalised float32 vectors, in the fastest precision that is safe on this machine.

Index build, evaluation, mining and search all encode through :class:`Encoder`, so a speed-up here
reaches every stage. What it does beyond ``SentenceTransformer.encode``:

* **Precision.** :func:`~embedtune.encoding.precision.resolve_precision` says what ``auto`` means on
  the device; bf16/fp16 run on a half-precision copy of the model and ``int8`` on a dynamically
  quantised one (:mod:`embedtune.encoding.kernels`). The sentence vector is re-normalised in fp32,
  which keeps it markedly closer to the fp32 vector than normalising in bf16 would.
* **Less padding.** Texts are sorted by their token count (sentence-transformers sorts by characters)
  so each batch pads to its own longest text: on a corpus of mixed lengths most of the padding a
  character sort leaves goes away.
* **No repeated work.** Identical texts in one call are encoded once; with a cache
  (:mod:`embedtune.encoding.cache`) a text this model has encoded the same way before is not
  encoded again.
* **Overlap.** On a GPU the next batch is tokenised on the CPU while the current one runs. On a CPU
  tokenising is a small share of the time and would only take cores from the model, so it runs in
  turn.
* **Pre-packed weights.** On a bf16 CPU the Linear layers run on weights oneDNN has laid out once
  for its AMX kernels, with the feed-forward GELU fused in
  (:class:`~embedtune.encoding.kernels.PackedLinear`).

* **Another runtime.** ``backend="openvino"`` runs the transformer converted to OpenVINO
  (:mod:`embedtune.encoding.openvino`, the optional extra ``embedtune[openvino]``), converted once
  per model and cached on disk; everything else here (sorting, deduplication, the cache, pooling in
  the model's own modules) is the same. Its vectors differ from PyTorch's by rounding, so the cache
  keys them apart. :func:`make_encoder` picks it for ``auto`` where it pays.

Not done, because it measured no faster here: ``torch.compile`` (frozen weights; a gain of a few
percent over eager bf16 does not repay its compile time in every process: the ``bf16-compiled`` row
of ``benchmarks/results/encoding_speed.md``), eager instead of SDPA attention (slower), ONNX Runtime
(its int8 fell well behind bf16). sentence-transformers' own route to OpenVINO (optimum-intel) pins
older transformers and pulls torchvision, so the backend converts the transformer itself.

Threads are left as torch sets them (one per physical core), which is what suits a CPU that runs
nothing else; a caller that shards a corpus over processes sets ``torch.set_num_threads`` per process.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from embedtune.encoding.cache import CacheOption, EncodingCache, default_cache_dir, warn_unusable
from embedtune.encoding.config import BACKENDS, OPENVINO_MIN_TEXTS
from embedtune.encoding.kernels import can_pack, prepared_model
from embedtune.encoding.precision import resolve_precision
from embedtune.errors import EmbedtuneError, EmbedtuneWarning

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

T = TypeVar("T")

# What an Encoder runs on; ``auto`` (:data:`BACKENDS`) is chosen between them by :func:`make_encoder`.
ENCODER_BACKENDS = ("torch", "openvino")

# Bumped when the vectors this module makes for the same model and precision change (cache keys).
_VECTOR_FORMAT = 2  # 2: bf16 on pre-packed Linear weights, batches padded to 8k tokens (rounding apart)


def prompt_names(model: SentenceTransformer) -> tuple[str | None, str | None]:
    """The names of the model's query and document prompts (E5/BGE-style prefixes), if it has them.

    ``embedtune train --query-prompt/--document-prompt`` saves them as ``query`` and ``document``;
    models from elsewhere may call the document prompt ``passage`` or ``corpus``.
    """
    prompts = dict(getattr(model, "prompts", None) or {})
    document = next((p for p in ("document", "passage", "corpus") if p in prompts), None)
    return ("query" if "query" in prompts else None), document


def _length_step(model: SentenceTransformer, precision: str) -> int:
    """The multiple that batches are padded to in tokens: 8 for the half precisions, else 1.

    bf16/fp16 kernels are generated per input shape, so the first batch of a new length costs clearly
    more than the next one of that length. Padding to a multiple of 8 (a few tokens a batch) leaves
    an eighth as many shapes. Not where the model's own limit is no multiple of 8: padding could pass
    its positions.
    """
    limit = model.max_seq_length
    return 8 if precision in ("bf16", "fp16") and (limit is None or limit % 8 == 0) else 1


@dataclass
class EncodeStats:
    """Texts asked for, texts run through the model, and texts served from the cache (all calls so far)."""

    texts: int = 0
    encoded: int = 0
    cached: int = 0


class Encoder:
    """A model made ready to encode in one precision, for any number of ``encode`` calls.

    ``cache``: True = the default cache folder, a path = that folder, None/False = no cache (see
    :mod:`embedtune.encoding.cache`). The cache key hashes the model as it is when the encoder is
    made: after changing its weights in memory, make a new encoder.

    ``pack=False`` keeps PyTorch's own bf16 Linear layers instead of oneDNN's pre-packed ones (see
    :class:`~embedtune.encoding.kernels.PackedLinear`): the same vectors up to rounding, slower; it
    is there for A/B benchmarks.

    ``backend="openvino"`` runs the transformer through OpenVINO on the CPU (converted on first use and
    kept in the ``openvino`` folder of the cache folder, or of the default one without a cache). On a
    GPU it falls back to torch with a warning, as precisions the device cannot run do.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        precision: str = "auto",
        *,
        cache: CacheOption = None,
        pack: bool = True,
        backend: str = "torch",
    ):
        if backend not in ENCODER_BACKENDS:
            raise EmbedtuneError(f"unknown backend '{backend}' (choose from {', '.join(ENCODER_BACKENDS)})")
        self.device = model.device
        self.cache = EncodingCache.resolve(cache)
        self.backend = self._usable_backend(backend)
        self._fingerprint = self._source = None
        if self.cache is not None or self.backend == "openvino":
            from embedtune.models import loaded_model_fingerprint

            self._fingerprint = loaded_model_fingerprint(model)  # the fp32 weights the vectors derive from
            self._source = getattr(getattr(model[0], "auto_model", None), "name_or_path", None)
        if self.backend == "openvino":
            from embedtune.encoding.openvino import OpenVINOTransformer, openvino_precision

            self.precision = openvino_precision(precision)
            self.model, self._packed = model, False
            self._forward: Callable[[dict], dict] = OpenVINOTransformer(
                model, self.precision, openvino_dir(self.cache), self._fingerprint
            )
        else:
            self.precision = resolve_precision(precision, str(model.device))
            self.model = self._forward = prepared_model(model, self.precision, pack)
            self._packed = pack and can_pack(model, self.precision)  # packed vectors differ in rounding
        self.overlap = self.device.type == "cuda"
        self.length_step = _length_step(self.model, self.precision)
        self.stats = EncodeStats()

    def _usable_backend(self, backend: str) -> str:
        if backend == "openvino" and self.device.type != "cpu":
            warnings.warn(
                f"the openvino backend runs on CPUs only; encoding with torch on {self.device}",
                EmbedtuneWarning,
                stacklevel=3,
            )
            return "torch"
        return backend

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        show_progress: bool = True,
        prompt_name: str | None = None,
        desc: str = "encoding",
    ) -> np.ndarray:
        """L2-normalised float32 vectors of shape ``(len(texts), dim)``, in the order of ``texts``.

        ``prompt_name`` selects one of the model's prompts (e.g. ``"query"``), prepended to every text.
        ``desc`` labels the progress bar, so that a run with several encodings tells them apart
        (``"encoding corpus (default)"``, ``"encoding queries (index:x)"``).
        """
        if batch_size < 1:
            raise EmbedtuneError(f"batch size must be positive, got {batch_size}")
        prompt = self._prompt(prompt_name)
        rows: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            rows.setdefault(text, []).append(i)
        distinct = list(rows)
        vectors = np.empty((len(distinct), self.dimension), dtype=np.float32)
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in distinct] if self.cache is not None else []
        cached = self._cache_get(prompt, keys)
        hit = {i for i, key in enumerate(keys) if key in cached}
        for i in hit:
            vectors[i] = cached[keys[i]]
        missing = [i for i in range(len(distinct)) if i not in hit]
        if missing:
            vectors[missing] = self._run([distinct[i] for i in missing], prompt, batch_size, show_progress, desc)
            self._cache_put(prompt, [keys[i] for i in missing] if keys else [], vectors[missing])
        self.stats.texts += len(texts)
        self.stats.encoded += len(missing)
        self.stats.cached += len(hit)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for vector, positions in zip(vectors, rows.values(), strict=True):
            out[positions] = vector
        return out

    def _prompt(self, prompt_name: str | None) -> str:
        if prompt_name is None:
            return ""
        prompts = dict(getattr(self.model, "prompts", None) or {})
        if prompt_name not in prompts:
            raise EmbedtuneError(f"the model has no prompt '{prompt_name}' (it has: {', '.join(prompts) or 'none'})")
        return prompts[prompt_name] or ""  # sentence-transformers keeps unset prompts as None or ""

    # --- the cache ------------------------------------------------------------------------------

    def _space(self, prompt: str) -> tuple[str, dict]:
        """The cache's vector space: everything besides the text that decides the vector."""
        description = {
            "model": self._fingerprint,
            # Read from the model that runs, at each call: ``max_seq_length`` is a plain attribute that
            # callers set after loading, and sentence-transformers' module configs do not record it.
            "max_seq_length": self.model.max_seq_length,
            "packed": self._packed,
            # Only when not torch, so that vectors cached before there were backends keep their key.
            **({"backend": self.backend} if self.backend != "torch" else {}),
            "precision": self.precision,
            "device": self.device.type,
            "prompt": prompt,
            "format": _VECTOR_FORMAT,
        }
        space = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
        return space, description | {"source": self._source}  # where the model came from: shown, not keyed

    def _cache_get(self, prompt: str, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        return self._using_cache(lambda cache: cache.get(*self._space(prompt), keys, self.dimension), keys) or {}

    def _cache_put(self, prompt: str, keys: list[bytes], vectors: np.ndarray) -> None:
        self._using_cache(lambda cache: cache.put(*self._space(prompt), keys, vectors), keys)

    def _using_cache(self, operation: Callable[[EncodingCache], T], keys: list[bytes]) -> T | None:
        """``operation(cache)``, or None without a cache or keys. A cache that fails (read-only home, full
        disk) is dropped for the rest of this encoder's life, with a warning: encoding must go on."""
        if self.cache is None or not keys:
            return None
        try:
            return operation(self.cache)
        except (sqlite3.Error, OSError) as e:
            warn_unusable(self.cache, e)
            self.cache = None
            return None

    # --- running the model ----------------------------------------------------------------------

    def _run(self, texts: list[str], prompt: str, batch_size: int, show_progress: bool, desc: str) -> np.ndarray:
        """Encode ``texts`` (all distinct, none cached) in batches of similar token counts."""
        import torch
        from tqdm.auto import tqdm

        if len(texts) <= batch_size:  # one batch pads to its longest text in any order: skip the length pass
            order = np.arange(len(texts))
        else:
            order = np.argsort(-self._token_lengths(texts, prompt), kind="stable")
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        result = np.empty((len(texts), self.dimension), dtype=np.float32)
        progress = tqdm(total=len(texts), desc=desc, unit="text", disable=not show_progress)
        with progress, torch.inference_mode():
            for rows, features in self._batches(texts, prompt, batches):
                embeddings = self._forward(features)["sentence_embedding"].float()
                result[rows] = torch.nn.functional.normalize(embeddings, dim=1).cpu().numpy()
                progress.update(len(rows))
        return result

    def _token_lengths(self, texts: list[str], prompt: str) -> np.ndarray:
        """Token counts after truncation, to sort by: a second tokenisation, a small share of the bf16
        time, repaid by the padding it saves (the ``fp32`` row against ``st-fp32`` in
        ``benchmarks/results/encoding_speed.md``)."""
        ids = self.model.tokenizer(
            [prompt + t for t in texts] if prompt else texts,
            truncation=True,
            max_length=self.model.max_seq_length,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )["input_ids"]
        return np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(texts))

    def _batches(self, texts: list[str], prompt: str, batches: list[np.ndarray]) -> Iterator[tuple[np.ndarray, dict]]:
        """Each batch's rows and model inputs (on the model's device); tokenised one batch ahead if ``overlap``."""
        from sentence_transformers.util import batch_to_device

        step = self.length_step
        processing = {"processing_kwargs": {"text": {"pad_to_multiple_of": step}}} if step > 1 else {}

        def features(rows: np.ndarray) -> dict:
            batch = [texts[i] for i in rows]
            return batch_to_device(self.model.preprocess(batch, prompt=prompt or None, **processing), self.device)

        if not self.overlap:
            for rows in batches:
                yield rows, features(rows)
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(features, batches[0]) if batches else None
            for i, rows in enumerate(batches):
                ready = pending.result()
                pending = pool.submit(features, batches[i + 1]) if i + 1 < len(batches) else None
                yield rows, ready


def make_encoder(
    model: SentenceTransformer,
    precision: str | None,
    *,
    backend: str = "auto",
    workload: int | None = None,
    cache: CacheOption = None,
    fallback: str = "auto",
) -> Encoder:
    """An :class:`Encoder` on the backend ``backend`` names; ``auto`` = OpenVINO where it pays, else torch.

    OpenVINO pays where it is installed, the model is on a CPU and converts, and either texts come one
    or a few at a time over a long life (``workload=None``: a search, the service, a shard worker;
    OpenVINO's per-call overhead is well below PyTorch's eager dispatch, which dominates a short query)
    or a batch of ``workload`` texts repays a conversion (:data:`OPENVINO_MIN_TEXTS`, or a converted
    model is already cached: a search converts the model an index build used), and OpenVINO runs the
    precision asked for as asked (not int8). Measured:
    ``benchmarks/results/encoding_speed.md`` and ``openvino_latency.md``.

    A conversion ``auto`` chose that fails, or whose vectors fail the check against PyTorch, falls back
    to torch with a warning rather than failing a run the user did not ask OpenVINO for; asked for by
    name, it fails. ``precision`` None means ``fallback``, the precision torch would use (an index's
    own); OpenVINO then picks its own ``auto``.
    """
    if backend not in BACKENDS:
        raise EmbedtuneError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if backend == "auto":
        if _openvino_pays(model, precision, workload, cache):
            try:
                return Encoder(model, precision or "auto", cache=cache, backend="openvino")
            except EmbedtuneError as e:
                warnings.warn(f"openvino unusable ({e}); encoding with torch", EmbedtuneWarning, stacklevel=2)
        backend = "torch"
    return Encoder(model, precision or fallback, cache=cache, backend=backend)


def _openvino_pays(model: SentenceTransformer, precision: str | None, workload: int | None, cache: CacheOption) -> bool:
    """``auto``'s rule (see :func:`make_encoder`); never for a precision OpenVINO would change (int8)."""
    from importlib.util import find_spec

    if model.device.type != "cpu" or find_spec("openvino") is None:
        return False
    from embedtune.encoding.openvino import can_convert, is_converted, runs_as_asked

    if not (runs_as_asked(precision) and can_convert(model)):
        return False
    if workload is None or workload >= OPENVINO_MIN_TEXTS:
        return True
    from embedtune.models import loaded_model_fingerprint

    return is_converted(openvino_dir(EncodingCache.resolve(cache)), loaded_model_fingerprint(model))


def openvino_dir(cache: EncodingCache | None) -> Path:
    """Where converted models are kept: the ``openvino`` folder of the cache folder, or of the default one."""
    return (cache.directory if cache is not None else default_cache_dir()) / "openvino"
