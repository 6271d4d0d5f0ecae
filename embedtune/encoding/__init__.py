"""Encoding texts into normalised vectors: the precision policy, the model kernels, the encoder, its cache.

:mod:`~embedtune.encoding.precision` says what each precision means on a device,
:mod:`~embedtune.encoding.kernels` prepares the model copy that runs (the only home of private torch
ops), :mod:`~embedtune.encoding.encoder` holds :class:`Encoder`, :mod:`~embedtune.encoding.cache`
the disk cache of vectors, :mod:`~embedtune.encoding.config` the settings every stage shares,
:mod:`~embedtune.encoding.openvino` the optional OpenVINO backend, and
:mod:`~embedtune.encoding.files` the encoding of a file of texts into a file of vectors.
"""

from embedtune.encoding.cache import CacheOption, EncodingCache, default_cache_dir
from embedtune.encoding.config import BACKENDS, EncodeSettings
from embedtune.encoding.encoder import OPENVINO_MIN_TEXTS, Encoder, EncodeStats, make_encoder, prompt_names
from embedtune.encoding.files import EncodedFile, encode_file, read_texts, write_vectors
from embedtune.encoding.precision import (
    PRECISIONS,
    TRAIN_PRECISIONS,
    cpu_has_amx_bf16,
    cpu_has_bf16,
    resolve_precision,
    resolve_training_precision,
)

__all__ = [
    "BACKENDS",
    "OPENVINO_MIN_TEXTS",
    "PRECISIONS",
    "TRAIN_PRECISIONS",
    "CacheOption",
    "EncodeSettings",
    "EncodeStats",
    "EncodedFile",
    "Encoder",
    "EncodingCache",
    "cpu_has_amx_bf16",
    "cpu_has_bf16",
    "default_cache_dir",
    "encode_file",
    "make_encoder",
    "prompt_names",
    "read_texts",
    "resolve_precision",
    "resolve_training_precision",
    "write_vectors",
]
