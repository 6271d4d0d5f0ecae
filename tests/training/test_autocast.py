"""Training's precision is measured where bf16 could pay, and a bf16-autocast step agrees with an fp32 one."""

from __future__ import annotations

import pytest
from datasets import Dataset
from helpers import CORPUS, QRELS, QUERIES

from embedtune.encoding.precision import bf16_arithmetic
from embedtune.errors import EmbedtuneError
from embedtune.training.autocast import LOSS_TOLERANCE, choose_precision, probe_rows, step_loss

AVX2 = frozenset({"avx2", "fma", "avx512f"})  # no bf16 arithmetic (AVX512F alone has none)
ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})  # AVX512-BF16 without AMX
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_tile"}


@pytest.fixture
def rows() -> Dataset:
    pairs = [(QUERIES[q], CORPUS[d]) for q, d in QRELS["train"]]
    return Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})


@pytest.fixture
def loss(tiny_model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return MultipleNegativesRankingLoss(tiny_model)


def test_bf16_may_pay_only_where_the_cpu_has_bf16_arithmetic():
    assert not bf16_arithmetic(AVX2)
    assert bf16_arithmetic(ZEN4) and bf16_arithmetic(SAPPHIRE_RAPIDS)


def test_without_bf16_arithmetic_auto_trains_in_fp32_without_measuring(tiny_model, loss, rows):
    choice = choose_precision("auto", tiny_model, loss, rows, flags=AVX2)
    assert (choice.value, choice.source) == ("fp32", "rule") and "emulate" in choice.why


@pytest.mark.parametrize("flags", [ZEN4, SAPPHIRE_RAPIDS], ids=["avx512-bf16", "amx"])
def test_with_bf16_arithmetic_auto_measures_both_and_says_the_timings(tiny_model, loss, rows, flags):
    weights = [p.detach().clone() for p in tiny_model.parameters()]
    choice = choose_precision("auto", tiny_model, loss, rows, flags=flags)
    assert choice.source == "measured" and choice.value in ("fp32", "bf16")
    assert "fp32" in choice.why and "bf16" in choice.why and " s" in choice.why
    # the measurement trains nothing: weights, gradients and mode as they were
    assert all((p == w).all() for p, w in zip(tiny_model.parameters(), weights, strict=True))
    assert all(p.grad is None for p in tiny_model.parameters())


def test_a_bf16_autocast_step_agrees_with_an_fp32_step(tiny_model, loss, rows):
    fp32, bf16 = step_loss(tiny_model, loss, rows, bf16=False), step_loss(tiny_model, loss, rows, bf16=True)
    assert fp32 > 0 and abs(bf16 - fp32) <= LOSS_TOLERANCE * max(1.0, fp32)
    assert bf16 != fp32  # autocast really ran in bf16


def test_a_given_precision_is_kept_and_an_encoding_only_one_refused(tiny_model, loss, rows):
    assert choose_precision("bf16", tiny_model, loss, rows, flags=AVX2).value == "bf16"
    assert choose_precision("fp32", tiny_model, loss, rows, flags=ZEN4).source == "given"
    with pytest.raises(EmbedtuneError, match="for encoding only"):
        choose_precision("int8", tiny_model, loss, rows)


def test_the_probe_takes_the_first_rows_of_the_first_dataset(rows):
    from datasets import DatasetDict

    assert len(probe_rows(rows)) == min(8, len(rows))
    assert probe_rows(DatasetDict({"a": rows.select([0, 1]), "b": rows}))["anchor"] == rows["anchor"][:2]
