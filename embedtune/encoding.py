"""Turning texts into normalised float32 vectors, in the fastest precision that is safe on this machine.

Index build, evaluation, mining and search all encode through :class:`Encoder`, so a speed-up here
reaches every stage. What it does beyond ``SentenceTransformer.encode``:

* **Precision.** ``auto`` picks bf16 where the hardware has native bf16 matrix units (AMX on Intel
  CPUs, CUDA GPUs with bf16), fp16 on older CUDA GPUs, else fp32. bf16/fp16 run on a half-precision
  copy of the model; the sentence vector is re-normalised in fp32, which keeps it within cosine
  0.9999 of the fp32 vector (normalised in bf16 it is 0.998). ``int8`` quantises the Linear layers
  dynamically (CPU only); see :func:`_quantized` for what it leaves in fp32 and why.
* **Less padding.** Texts are sorted by their token count (sentence-transformers sorts by characters)
  so each batch pads to its own longest text: on the Debian corpus that pads 2% of the tokens, not 29%.
* **No repeated work.** Identical texts in one call are encoded once; with a cache
  (:mod:`embedtune.encoding_cache`) a text this model has encoded the same way before is not
  encoded again.
* **Overlap.** On a GPU the next batch is tokenised on the CPU while the current one runs. On a CPU
  tokenising is ~3% of the time and would only take cores from the model, so it runs in turn.

* **Pre-packed weights.** On a bf16 CPU the Linear layers run on weights oneDNN has laid out once
  for its AMX kernels, with the feed-forward GELU fused in (:class:`_PackedLinear`).

Not done, because it measured no faster here: ``torch.compile`` (frozen weights; +3% over eager bf16
in an alternating A/B after a ~23 s compile, see ``benchmarks/encoding_speed.py``), eager instead
of SDPA attention (slower). OpenVINO (``openvino.convert_model`` of the transformer) and ONNX
Runtime were faster at batch 1 (3-6 ms) but not for documents (ONNX Runtime's int8: ~0.6x bf16), so
neither is a dependency: converting costs 2-3 s in every process, and sentence-transformers' route
to OpenVINO (optimum-intel) pins older transformers and pulls torchvision.

Threads are left as torch sets them (one per physical core), which is what suits a CPU that runs
nothing else; a caller that shards a corpus over processes sets ``torch.set_num_threads`` per process.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import sqlite3
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

from embedtune.encoding_cache import CacheOption, EncodingCache, warn_unusable
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.settings import setting, validate

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

T = TypeVar("T")

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16", "int8")
TRAIN_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
# Bumped when the vectors this module makes for the same model and precision change (cache keys).
_VECTOR_FORMAT = 2  # 2: bf16 on pre-packed Linear weights, batches padded to 8k tokens (~1e-6 apart)


@functools.cache
def cpu_has_amx_bf16() -> bool:
    """True where the CPU advertises AMX bf16 tiles (Linux ``/proc/cpuinfo`` flags)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def _native_half(device: str) -> Literal["fp32", "bf16", "fp16"]:
    """The fastest safe precision of a device: bf16 on AMX CPUs and bf16 GPUs, fp16 on other GPUs."""
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_amx_bf16() else "fp32"


def resolve_precision(precision: str, device: str) -> str:
    """The encoding precision ``precision`` means on ``device``: ``auto`` resolved, impossible ones replaced.

    fp16 runs on CUDA only and int8 (dynamic quantisation) on CPUs only; asked for elsewhere, the
    device's ``auto`` choice is used instead, with a warning (an index built in fp16 on a GPU can
    still be searched on a CPU).
    """
    if precision not in PRECISIONS:
        raise EmbedtuneError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    cuda = device.startswith("cuda")
    if precision == "auto":
        return _native_half(device)
    if (precision == "fp16" and not cuda) or (precision == "int8" and cuda):
        fallback = _native_half(device)
        where = "CUDA GPUs" if precision == "fp16" else "CPUs"
        warnings.warn(
            f"precision {precision} runs on {where} only; encoding in {fallback} on {device} instead",
            EmbedtuneWarning,
            stacklevel=3,
        )
        return fallback
    return precision


def resolve_training_precision(precision: str, device: str) -> Literal["fp32", "bf16"]:
    """Training's precision: fp32, or bf16 autocast over fp32 weights (``auto`` where the device has bf16 units)."""
    if precision not in TRAIN_PRECISIONS:
        if precision in PRECISIONS:
            raise EmbedtuneError(
                f"precision '{precision}' is for encoding only; training runs in {', '.join(TRAIN_PRECISIONS)}"
            )
        raise EmbedtuneError(f"unknown precision '{precision}' (choose from {', '.join(TRAIN_PRECISIONS)})")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    return "bf16" if _native_half(device) == "bf16" else "fp32"


def prompt_names(model: SentenceTransformer) -> tuple[str | None, str | None]:
    """The names of the model's query and document prompts (E5/BGE-style prefixes), if it has them.

    ``embedtune train --query-prompt/--document-prompt`` saves them as ``query`` and ``document``;
    models from elsewhere may call the document prompt ``passage`` or ``corpus``.
    """
    prompts = dict(getattr(model, "prompts", None) or {})
    document = next((p for p in ("document", "passage", "corpus") if p in prompts), None)
    return ("query" if "query" in prompts else None), document


def _quantized(model: SentenceTransformer) -> SentenceTransformer:
    """A copy whose Linear layers are int8 (per-channel weights, activations quantised per batch).

    Down-projections (wider in than out: the feed-forward output) stay fp32: they read GELU outputs,
    whose outliers a per-tensor activation scale clips. On the default model that lifts the worst
    cosine to fp32 from 0.96 to 0.98 for ~10% of int8's speed.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    quantized = copy.deepcopy(model)
    layers = {
        name: per_channel_dynamic_qconfig
        for name, module in quantized.named_modules()
        if isinstance(module, torch.nn.Linear) and module.in_features <= module.out_features
    }
    with warnings.catch_warnings():  # torch.ao's deprecation notices: nothing the user can act on
        warnings.simplefilter("ignore")
        return quantize_dynamic(quantized, layers, dtype=torch.qint8)


class _PackedLinear:
    """A bf16 ``nn.Linear`` whose weight oneDNN has re-laid out once for its AMX kernels, optionally with
    the GELU that follows it fused in.

    A plain bf16 Linear has oneDNN reorder its weight for the AMX kernels on every call, which weighs
    most at batch 1: in ``benchmarks/encoding_speed.py`` packing took batch-1 latency from 10.7 to
    6.1 ms, and documents/s up 2% (8% in a steady-state per-batch A/B). This is the op
    torch.compile's freezing pass emits, without compiling. It is not an ``nn.Module`` parameter holder on purpose: the
    packed weight is an opaque oneDNN tensor, so it lives only in an encoding copy of the model.
    """

    def __init__(self, linear: torch.nn.Linear, gelu: bool = False):
        import torch

        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.out_features = linear.out_features
        # oneDNN's pointwise attribute and algorithm: exact (erf) GELU, or none
        self.attr, self.algorithm = ("gelu", "none") if gelu else ("none", "")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        flat = x.reshape(-1, x.shape[-1])
        y = torch.ops.mkldnn._linear_pointwise(flat, self.weight, self.bias, self.attr, [], self.algorithm)
        return y.reshape(*x.shape[:-1], self.out_features)


def _pack_linears(model: torch.nn.Module) -> None:
    """Swap every Linear of a CPU bf16 ``model`` for a :class:`_PackedLinear`, in place.

    A feed-forward block laid out as Hugging Face encoders do (``dense`` then ``intermediate_act_fn``,
    BERT/RoBERTa/MPNet/ELECTRA) with exact GELU gets the GELU fused into its Linear; any other
    activation stays as it is.
    """
    import torch
    from transformers.activations import GELUActivation

    for module in list(model.modules()):
        activation = getattr(module, "intermediate_act_fn", None)
        fusable = type(activation) is GELUActivation and activation.act is torch.nn.functional.gelu
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                fuse = fusable and name == "dense"
                delattr(module, name)  # a plain attribute from here on, not a submodule
                setattr(module, name, _PackedLinear(child, gelu=fuse))
                if fuse:
                    module.intermediate_act_fn = torch.nn.Identity()


def _can_pack(model: SentenceTransformer, precision: str) -> bool:
    """Packing pays for bf16 on a CPU whose oneDNN runs bf16 natively (it is a private torch op: guard it)."""
    import torch

    return (
        precision == "bf16"
        and model.device.type == "cpu"
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def _prepared(model: SentenceTransformer, precision: str, pack: bool) -> SentenceTransformer:
    """The model to run: the caller's own in fp32, else a converted copy (a model being trained stays fp32)."""
    import torch

    if precision == "int8":
        return _quantized(model)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return model
    converted = copy.deepcopy(model).to(dtype)
    if pack and _can_pack(model, precision):
        _pack_linears(converted)
    return converted


def _length_step(model: SentenceTransformer, precision: str) -> int:
    """The multiple that batches are padded to in tokens: 8 for the half precisions, else 1.

    bf16/fp16 kernels are generated per input shape; the first batch of a new length cost ~50% more
    than the next one here. Padding to a multiple of 8 (~4 tokens a batch) leaves an eighth as many
    shapes. Not where the model's own limit is no multiple of 8: padding could pass its positions.
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
    :mod:`embedtune.encoding_cache`). The cache key hashes the model as it is when the encoder is
    made: after changing its weights in memory, make a new encoder.

    ``pack=False`` keeps PyTorch's own bf16 Linear layers instead of oneDNN's pre-packed ones (see
    :class:`_PackedLinear`): the same vectors to ~1e-6, slower; it is there for A/B benchmarks.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        precision: str = "auto",
        *,
        cache: CacheOption = None,
        pack: bool = True,
    ):
        self.device = model.device
        self.precision = resolve_precision(precision, str(model.device))
        self.model = _prepared(model, self.precision, pack)
        self._packed = pack and _can_pack(model, self.precision)  # packed vectors differ by ~1e-6
        self.cache = EncodingCache.resolve(cache)
        self._fingerprint = self._source = None
        if self.cache is not None:
            from embedtune.models import loaded_model_fingerprint

            self._fingerprint = loaded_model_fingerprint(model)  # the fp32 weights the vectors derive from
            self._source = getattr(getattr(model[0], "auto_model", None), "name_or_path", None)
        self.overlap = self.device.type == "cuda"
        self.length_step = _length_step(self.model, self.precision)
        self.stats = EncodeStats()

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
    ) -> np.ndarray:
        """L2-normalised float32 vectors of shape ``(len(texts), dim)``, in the order of ``texts``.

        ``prompt_name`` selects one of the model's prompts (e.g. ``"query"``), prepended to every text.
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
            vectors[missing] = self._run([distinct[i] for i in missing], prompt, batch_size, show_progress)
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

    def _run(self, texts: list[str], prompt: str, batch_size: int, show_progress: bool) -> np.ndarray:
        """Encode ``texts`` (all distinct, none cached) in batches of similar token counts."""
        import torch
        from tqdm.auto import tqdm

        if len(texts) <= batch_size:  # one batch pads to its longest text in any order: skip the length pass
            order = np.arange(len(texts))
        else:
            order = np.argsort(-self._token_lengths(texts, prompt), kind="stable")
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        result = np.empty((len(texts), self.dimension), dtype=np.float32)
        progress = tqdm(total=len(texts), desc="encoding", unit="text", disable=not show_progress)
        with progress, torch.inference_mode():
            for rows, features in self._batches(texts, prompt, batches):
                embeddings = self.model(features)["sentence_embedding"].float()
                result[rows] = torch.nn.functional.normalize(embeddings, dim=1).cpu().numpy()
                progress.update(len(rows))
        return result

    def _token_lengths(self, texts: list[str], prompt: str) -> np.ndarray:
        """Token counts after truncation, to sort by: a second tokenisation (~3% of the bf16 time on this
        project's CPU), repaid by the padding it saves (2% of the tokens instead of 29% on data/debian)."""
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


@dataclass
class EncodeSettings:
    """How a stage encodes texts: one declaration shared by index build, search, evaluation and mining."""

    precision: str = setting(
        "auto",
        help="Encoding precision: auto = bf16 where the CPU has AMX or the GPU has bf16, fp16 on other GPUs, "
        "else fp32; int8 = dynamically quantised Linear layers (CPU; never chosen by auto: slower than bf16 on AMX).",
        choices=PRECISIONS,
    )
    batch_size: int = setting(
        32, help="Texts per encoding batch (texts are sorted by length, so batches pad little).", min=1
    )
    max_seq_length: int | None = setting(
        None, help="Tokens kept per text when encoding (default: the model's own limit).", min=8
    )
    cache: bool = setting(
        True,
        help="Read and write the encoding cache ($EMBEDTUNE_CACHE, default ~/.cache/embedtune/encodings), which "
        "spares re-encoding texts this model has encoded the same way before.",
    )

    def __post_init__(self) -> None:
        validate(self)
