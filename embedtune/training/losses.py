"""Training losses by name, each matched to the data formats it can learn from.

The losses themselves are sentence-transformers' (plain ``nn.Module``s with the trainer's contract);
what this module adds is the choice: a name a user can type, the formats each loss fits, a default
picked from the data's shape, and an error that says which columns a loss needs instead of a shape
mismatch deep inside a forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from embedtune.errors import EmbedtuneError
from embedtune.training_data import TrainingData

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from torch import nn


@dataclass(frozen=True)
class LossParams:
    """Knobs shared by the losses. ``temperature`` is the softmax temperature of the in-batch and
    CoSENT-style losses (scale = 1 / temperature; 0.05 is sentence-transformers' scale 20).
    ``gather_across_devices``: under DDP, the in-batch-negative losses also take the other processes'
    texts as negatives, so that N processes of batch B train like one of batch N x B."""

    temperature: float = 0.05
    mini_batch_size: int = 32
    triplet_margin: float = 0.1
    matryoshka_dims: tuple[int, ...] | None = None
    gather_across_devices: bool = False


@dataclass(frozen=True)
class LossSpec:
    name: str
    formats: frozenset[str]
    needs: str  # the columns, as a user would write them
    summary: str
    build: Callable[[SentenceTransformer, LossParams], nn.Module]
    uses_label: bool = False
    needs_teacher_scores: bool = False
    in_batch: bool = False  # compares the rows of a batch with each other: learns nothing from a batch of 1


def _mnrl(directions: tuple[str, ...] = ("query_to_doc",), cached: bool = False):
    def build(model: SentenceTransformer, p: LossParams) -> nn.Module:
        from sentence_transformers.sentence_transformer import losses

        kwargs = {"scale": 1.0 / p.temperature, "directions": directions}
        kwargs["gather_across_devices"] = p.gather_across_devices
        if len(directions) > 1:
            kwargs["partition_mode"] = "per_direction"  # one softmax per direction, as the symmetric loss does
        if cached:
            return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=p.mini_batch_size, **kwargs)
        return losses.MultipleNegativesRankingLoss(model, **kwargs)

    return build


def _scored(class_name: str, scaled: bool):
    def build(model: SentenceTransformer, p: LossParams) -> nn.Module:
        from sentence_transformers.sentence_transformer import losses

        cls = getattr(losses, class_name)
        return cls(model, scale=1.0 / p.temperature) if scaled else cls(model)

    return build


def _triplet(model: SentenceTransformer, p: LossParams) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import TripletDistanceMetric, TripletLoss

    return TripletLoss(model, distance_metric=TripletDistanceMetric.COSINE, triplet_margin=p.triplet_margin)


def _margin_mse(model: SentenceTransformer, p: LossParams) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss

    return MarginMSELoss(model)


_CONTRASTIVE = frozenset({"pair", "triplet", "n-tuple"})
_SCORED = frozenset({"scored-pair"})
_QPN = "query, positive [, negative_1..n]"
_SIM = "sentence1, sentence2, score"
LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec(
            "mnrl", _CONTRASTIVE, _QPN, "in-batch negatives (InfoNCE), plus any hard negatives", _mnrl(), in_batch=True
        ),
        LossSpec(
            "cached-mnrl",
            _CONTRASTIVE,
            _QPN,
            "in-batch negatives with GradCache: batches of 1,024+ in bounded memory",
            _mnrl(cached=True),
            in_batch=True,
        ),
        LossSpec(
            "symmetric-mnrl",
            _CONTRASTIVE,
            _QPN,
            "in-batch negatives in both directions (query->doc and doc->query)",
            _mnrl(directions=("query_to_doc", "doc_to_query")),
            in_batch=True,
        ),
        LossSpec(
            "cosent",
            _SCORED,
            _SIM,
            "CoSENT: ranks pairs by their similarity score",
            _scored("CoSENTLoss", True),
            True,
            in_batch=True,
        ),
        LossSpec(
            "angle",
            _SCORED,
            _SIM,
            "AnglE: CoSENT on angle differences",
            _scored("AnglELoss", True),
            True,
            in_batch=True,
        ),
        LossSpec("cosine", _SCORED, _SIM, "MSE between cosine and score", _scored("CosineSimilarityLoss", False), True),
        LossSpec("triplet", frozenset({"triplet"}), "query, positive, negative", "cosine triplet margin", _triplet),
        LossSpec(
            "margin-mse",
            frozenset({"triplet", "n-tuple"}),
            "query, positive, negative_1..n, scores",
            "MarginMSE: distil the teacher's score margins",
            _margin_mse,
            uses_label=True,
            needs_teacher_scores=True,
        ),
    )
}
ALIASES = {"infonce": "mnrl", "gradcache": "cached-mnrl", "cosine-similarity": "cosine", "marginmse": "margin-mse"}


def default_loss(data: TrainingData) -> str:
    """CoSENT for scored pairs (it beats cosine-MSE on STS), in-batch negatives for everything else."""
    return "cosent" if data.format == "scored-pair" else "mnrl"


def resolve_loss(name: str | None, data: TrainingData) -> LossSpec:
    """The loss spec for ``name`` (or the data's default), checked against the data's columns."""
    key = default_loss(data) if name in (None, "auto") else ALIASES.get(name.lower(), name.lower())
    spec = LOSSES.get(key)
    if spec is None:
        raise EmbedtuneError(f"unknown loss '{name}'; choose one of: {', '.join(LOSSES)}")
    if data.format not in spec.formats or (spec.needs_teacher_scores and not data.teacher_scores):
        found = ", ".join(data.text_columns) + (", scores" if data.teacher_scores else "")
        raise EmbedtuneError(f"loss '{spec.name}' needs columns ({spec.needs}); the data has {data.format}s ({found})")
    return spec


def build_loss(spec: LossSpec, model: SentenceTransformer, params: LossParams) -> nn.Module:
    """Instantiate ``spec`` for ``model``, wrapped in MatryoshkaLoss when truncation dims are given."""
    loss = spec.build(model, params)
    if params.matryoshka_dims:
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

        dim = model.get_embedding_dimension()
        bad = [d for d in params.matryoshka_dims if not 0 < d <= dim]
        if bad:
            raise EmbedtuneError(f"matryoshka dims {bad} outside 1..{dim} (the model's embedding dimension)")
        loss = MatryoshkaLoss(model, loss, sorted(set(params.matryoshka_dims), reverse=True))
    return loss


def describe_losses() -> str:
    """One line per loss, for ``--help`` and error messages."""
    return "\n".join(f"{s.name:<15} {s.summary} [{s.needs}]" for s in LOSSES.values())
