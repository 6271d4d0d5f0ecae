"""The OpenVINO backend: a model's transformer converted once to OpenVINO, with its own pooling after it.

:class:`~embedtune.encoding.Encoder` runs through :class:`OpenVINOTransformer` when made with
``backend="openvino"`` (the optional extra ``embedtune[openvino]``). Only the Hugging Face transformer
(``model[0].auto_model``) is converted, with dynamic batch and sequence dimensions; the modules after
it (pooling over the attention mask, dense layers, normalisation) are the sentence-transformers modules
themselves, run in PyTorch on its token embeddings, so pooling cannot drift from what the torch backend
computes.

Failures designed out:

* **Converting in every process.** Conversion takes seconds; the converted model is kept on disk,
  keyed by the loaded model's fingerprint (weights, module settings, tokenizer) and the OpenVINO
  version, written to a temporary folder and renamed, so a killed or concurrent conversion never
  leaves a half-written model that a later process would read. A cache folder that cannot be written
  costs a warning and a conversion in the next process, never the encoding.
* **Silently different vectors.** Right after conversion, vectors of a fixed sample of texts are
  compared with the PyTorch model's; below cosine ``MIN_COSINE`` the encoder is refused with a
  one-line error (rather than falling back to PyTorch with a warning: the backend was asked for by
  name, and vectors that disagree mean a conversion problem the user should see, not a slower run
  they did not choose). Nothing is cached then, so the next attempt checks again. A model read back
  from the cache was checked when it was written.
* **A precision the CPU cannot run fast.** The bf16 inference-precision hint is given where the CPU
  has bf16 arithmetic (:func:`~embedtune.encoding.precision.cpu_has_bf16`: AMX or AVX512-BF16), as
  torch's ``auto`` does; elsewhere the model runs in f32, and the encoder reports ``fp32``. int8
  (NNCF static quantisation on a calibration sample of the corpus) is offered only if it passes the
  quality gate of ``benchmarks/openvino_int8.py`` (nDCG@10 and top-10 agreement against fp32); it
  does not today (``benchmarks/results/openvino_int8.md``), so asked for, it falls back to the
  backend's ``auto`` choice with a warning, as impossible precisions do.

OpenVINO runs on its own thread pool (one thread per physical core by default), which
``torch.set_num_threads`` does not limit.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtune.encoding.precision import cpu_has_bf16, resolve_precision
from embedtune.errors import EmbedtuneError, EmbedtuneWarning

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MIN_COSINE = 0.999
_MODEL_FILE = "model.xml"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# The conversion check's sample: lengths from a few tokens to a few hundred, so padding is exercised.
_CHECK_TEXTS = (
    "web server",
    "How do I configure a reverse proxy for a local web server?",
    "apt-get install fails with unmet dependencies after an interrupted upgrade; dpkg --configure -a did not help",
    " ".join(["The package manager resolves dependencies, downloads archives and unpacks them in order."] * 12),
)


def require_openvino() -> ModuleType:
    """The ``openvino`` module, or a one-line error saying how to install it."""
    try:
        import openvino
    except ImportError as e:
        raise EmbedtuneError(
            "the openvino backend needs the openvino package: pip install 'embedtune[openvino]'"
        ) from e
    return openvino


def runs_as_asked(precision: str | None) -> bool:
    """Whether the backend runs ``precision`` as asked (None: its own ``auto``): fp32, and bf16 on CPUs with
    bf16 arithmetic; int8 is not offered."""
    return precision in (None, "auto", "fp32") or (precision == "bf16" and cpu_has_bf16())


def openvino_precision(precision: str) -> str:
    """What ``precision`` means for the OpenVINO backend: ``auto`` as for torch (bf16 on CPUs with bf16
    arithmetic, AMX or AVX512-BF16, else fp32); int8, and bf16 on a CPU without bf16 arithmetic, fall
    back to that with a warning."""
    resolved = resolve_precision(precision, "cpu")
    if not runs_as_asked(resolved):
        fallback = resolve_precision("auto", "cpu")
        why = "is not offered" if resolved == "int8" else "runs only on CPUs with bf16 arithmetic (AMX, AVX512-BF16)"
        warnings.warn(
            f"precision {resolved} {why} with the openvino backend; encoding in {fallback} instead",
            EmbedtuneWarning,
            stacklevel=4,
        )
        return fallback
    return resolved


def _check_supported(model: SentenceTransformer) -> Any:
    """The model's first module, if it is a text transformer whose token embeddings OpenVINO can produce."""
    first = model[0]
    text = (getattr(first, "modality_config", None) or {}).get("text", {})
    output = text.get("method_output_name")
    if (
        getattr(first, "auto_model", None) is None
        or text.get("method") != "forward"
        or output not in ("last_hidden_state", ["last_hidden_state"], ("last_hidden_state",))
        or getattr(first, "module_output_name", "token_embeddings") != "token_embeddings"
    ):
        raise EmbedtuneError(
            "the openvino backend converts models whose first module is a text transformer returning "
            f"token embeddings; this one starts with {type(first).__name__}: use backend torch"
        )
    return first


def _convert(model: SentenceTransformer, ov: ModuleType) -> Any:
    """``openvino.convert_model`` of the transformer, returning only its token embeddings (last hidden state)."""
    import torch

    transformer = _check_supported(model).auto_model

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # traced: kwargs of the example input
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            out = self.transformer(input_ids=input_ids, attention_mask=attention_mask, **extra, return_dict=True)
            return out.last_hidden_state

    features = model.preprocess(list(_CHECK_TEXTS[:2]))
    example = {name: features[name].cpu() for name in _INPUTS if name in features}
    training = transformer.training
    transformer.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow: shapes stay dynamic
            return ov.convert_model(TokenEmbeddings(), example_input=example)
    except Exception as e:  # the converter raises its own types (OpConversionFailure, RuntimeError, ...)
        raise EmbedtuneError(f"openvino could not convert {type(transformer).__name__}: {e}".splitlines()[0]) from e
    finally:
        transformer.train(training)


def converted_path(directory: Path, fingerprint: str) -> Path:
    """The folder of the converted model with this ``fingerprint`` under ``directory``, for this OpenVINO."""
    # the version is a build string (2026.4.1-22982-.../releases/2026/4): made a folder name
    version = re.sub(r"[^\w.-]", "_", require_openvino().__version__)
    return Path(directory) / f"{fingerprint[:32]}-openvino-{version}"


def is_converted(directory: Path, fingerprint: str) -> bool:
    """Whether a converted model with this ``fingerprint`` is cached under ``directory`` (no conversion to pay)."""
    return (converted_path(directory, fingerprint) / _MODEL_FILE).is_file()


def can_convert(model: SentenceTransformer) -> bool:
    """Whether this model's first module is one the backend converts (a text transformer's token embeddings)."""
    try:
        _check_supported(model)
    except EmbedtuneError:
        return False
    return True


class OpenVINOTransformer:
    """A model's transformer compiled with OpenVINO for the CPU, followed by the model's own torch modules.

    Called like the model (``features`` from ``model.preprocess``), it returns the features with
    ``sentence_embedding`` set. ``directory`` holds converted models, one folder per ``fingerprint``
    (:func:`embedtune.models.loaded_model_fingerprint` of ``model``) and OpenVINO version.
    """

    def __init__(self, model: SentenceTransformer, precision: str, directory: Path, fingerprint: str):
        ov = require_openvino()
        _check_supported(model)
        self.model = model
        self.precision = precision
        self.path = converted_path(directory, fingerprint)
        self._core = ov.Core()
        self.converted = False  # True when this encoder converted the model (nothing usable was cached)
        converted = self._read()
        if converted is None:
            converted = _convert(model, ov)
            self.converted = True
        self._compiled = self._compile(converted)
        self._inputs = [port.get_any_name() for port in self._compiled.inputs]
        self._request = self._compiled.create_infer_request()
        if self.converted:
            self._check()
            self._save(converted, ov)

    def _compile(self, converted: Any) -> Any:
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time: the encoder runs batches in turn
        }
        return self._core.compile_model(converted, "CPU", config)

    def _read(self) -> Any | None:
        """The cached converted model, or None (absent or unreadable: it is converted again and replaced)."""
        self._stale = self.path.exists()  # a folder without a readable model: replaced after conversion
        if not (self.path / _MODEL_FILE).is_file():
            return None
        try:
            return self._core.read_model(self.path / _MODEL_FILE)
        except RuntimeError as e:
            warnings.warn(
                f"{self.path}: unreadable converted model ({e}); converting again", EmbedtuneWarning, stacklevel=4
            )
            return None

    def _save(self, converted: Any, ov: ModuleType) -> None:
        """Write the converted model beside its final folder and rename it there (weights kept in f32)."""
        from embedtune.io import make_temp_dir

        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = make_temp_dir(self.path)
            ov.save_model(converted, str(tmp / _MODEL_FILE), compress_to_fp16=False)
            if self.path.exists():
                if not self._stale:
                    return  # another process's conversion, finished meanwhile: the same model, kept
                shutil.rmtree(self.path, ignore_errors=True)
            os.replace(tmp, self.path)
        except (OSError, RuntimeError) as e:
            if not (self.path / _MODEL_FILE).is_file():
                warnings.warn(
                    f"converted model cannot be cached in {self.path.parent} ({e}); the next encoder converts again",
                    EmbedtuneWarning,
                    stacklevel=4,
                )
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _check(self) -> None:
        """Refuse a conversion whose sentence vectors disagree with PyTorch's on the sample texts."""
        import torch

        features = self.model.preprocess(list(_CHECK_TEXTS))
        with torch.inference_mode():
            expected = self.model(dict(features))["sentence_embedding"].float()
            got = self(dict(features))["sentence_embedding"].float()
        cosine = torch.nn.functional.cosine_similarity(expected, got, dim=1).min().item()
        if not cosine >= MIN_COSINE:  # also refuses NaN
            raise EmbedtuneError(
                f"the openvino conversion of this model disagrees with PyTorch (cosine {cosine:.4f} < "
                f"{MIN_COSINE} on a sample, {self.precision}): use backend torch"
            )

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        import torch

        inputs = {name: np.ascontiguousarray(features[name].numpy()) for name in self._inputs}
        # Inputs shared, not copied (one request, always called this way); the output is a copy: the
        # request's buffers are reused by the next call.
        tokens = self._request.infer(inputs, share_inputs=True)[0]
        features = dict(features, token_embeddings=torch.from_numpy(tokens))
        for module in list(self.model.children())[1:]:
            features = module(features)
        return features
