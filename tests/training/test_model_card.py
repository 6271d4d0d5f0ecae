"""The model card a run writes is Hub-ready: parsed by huggingface_hub, relative names, resolved loss."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import hf_cache

from embedtune.errors import EmbedtuneError
from embedtune.training import TRAIN_RECORD, RunRecord, TrainConfig, train


@pytest.fixture
def cached_base(tmp_path, tiny_st, monkeypatch) -> str:
    """The tiny model as the Hub id ``someone/tiny-st`` in a hand-made HF cache, with a card naming its license."""
    model = tmp_path / "base"
    shutil.copytree(tiny_st, model)
    (model / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n\n# tiny\n")
    hf_cache(tmp_path / "hub", "someone/tiny-st", model)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return "someone/tiny-st"


def _train(tmp_path, model, data, **overrides):
    options = dict(
        output=tmp_path / "m1",
        model=model,
        data=data,
        max_steps=2,
        batch_size=2,
        seed=0,
        dev=True,
        dataset_ids=("someone/debian-retrieval",),
        show_progress=False,
    )
    return train(TrainConfig(**{**options, **overrides}))


def test_the_card_is_hub_ready_and_names_things_relatively(tmp_path, cached_base, beir_dir):
    from huggingface_hub import ModelCard
    from sentence_transformers import SentenceTransformer

    result = _train(tmp_path, cached_base, beir_dir)
    card = ModelCard.load(result.output / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "someone/tiny-st"
    assert data["license"] == "mit" and data["language"] == "en"  # inherited from the base model's card
    assert data["datasets"] == ["someone/debian-retrieval"]
    assert data["pipeline_tag"] == "sentence-similarity" and data["library_name"] == "sentence-transformers"
    assert "sentence-transformers" in data["tags"] and "loss:mnrl" in data["tags"]
    (entry,) = data["model-index"]
    assert entry["name"] == "m1"
    metrics = {m["type"]: m["value"] for r in entry["results"] for m in r["metrics"]}
    assert metrics["ndcg@10"] == pytest.approx(result.dev_after["eval_dev_cosine_ndcg@10"])
    assert entry["results"][0]["dataset"]["split"] == "dev"

    text = card.text
    assert 'SentenceTransformer("m1")' in text and ".tmp" not in text
    assert "| loss | `mnrl` |" in text and "`auto`" not in text
    assert str(tmp_path) not in card.content  # no paths of the machine that trained it
    assert "`beir/qrels/train.tsv`" in text and "`beir/corpus.jsonl`" in text
    model = SentenceTransformer(str(result.output), device="cpu")
    assert model.encode(["a text"]).shape == (1, 32)


def test_the_run_record_is_typed_and_reads_the_records_before_its_schema(tmp_path, cached_base, beir_dir):
    result = _train(tmp_path, cached_base, beir_dir)
    record = RunRecord.read(result.output)
    assert record.card.base_model == "someone/tiny-st" and record.card.license == "mit"
    assert record.choices == dict(result.choices) and record.losses == result.losses
    assert (record.rows, record.steps, record.dev_metric) == (result.rows, result.steps, result.metric)
    raw = json.loads((result.output / TRAIN_RECORD).read_text())
    assert raw["schema"] == "embedtune.train_record/2" and raw["choices"]["loss"]["value"] == "mnrl"
    older = {key: value for key, value in raw.items() if key != "schema"}  # as written before the schema key
    assert RunRecord.from_json(json.dumps(older)) == record
    with pytest.raises(EmbedtuneError, match=r"not a training record this embedtune reads \(schema 'x/9'\)"):
        RunRecord.from_json(json.dumps({**raw, "schema": "x/9"}))
    with pytest.raises(EmbedtuneError, match=r"not a training record this embedtune reads \(no steps\)"):
        RunRecord.from_json(json.dumps({k: v for k, v in raw.items() if k != "steps"}))


def test_a_given_license_wins_over_the_base_models(tmp_path, cached_base, beir_dir):
    from huggingface_hub import ModelCard

    result = _train(tmp_path, cached_base, beir_dir, license="apache-2.0", dev=False, dataset_ids=None)
    data = ModelCard.load(result.output / "README.md").data.to_dict()
    assert data["license"] == "apache-2.0" and "datasets" not in data and "model-index" not in data


def test_a_local_base_model_has_no_base_model_id(tmp_path, tiny_st, beir_dir):
    from huggingface_hub import ModelCard

    result = _train(tmp_path, str(tiny_st), beir_dir, dev=False)
    card = ModelCard.load(result.output / "README.md")
    assert "base_model" not in card.data.to_dict()
    assert f"from `{tiny_st.name}`" in card.text


def test_a_trained_folder_is_named_in_mteb(tmp_path, cached_base, beir_dir):
    """MTEB names what ``embedtune.models.load_model`` loads from a folder by the card, not
    "no_model_name/available" (which a plain ``SentenceTransformer(folder)`` gets offline)."""
    from mteb.models import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

    from embedtune.models import load_model

    result = _train(tmp_path, cached_base, beir_dir)
    meta = SentenceTransformerEncoderWrapper(load_model(result.output, device="cpu")).mteb_model_meta
    assert meta.name == "m1" and meta.adapted_from == "someone/tiny-st"
    plain = SentenceTransformer(str(result.output), device="cpu", local_files_only=True)
    # what load_model is for: offline, sentence-transformers leaves a folder anonymous
    assert SentenceTransformerEncoderWrapper(plain).mteb_model_meta.name == "no_model_name/available"


def test_the_bundled_model_is_named_by_its_hub_id_in_mteb():
    from mteb.models import SentenceTransformerEncoderWrapper

    from embedtune.models import DEFAULT_MODEL_HUB_ID, load_model

    assert SentenceTransformerEncoderWrapper(load_model(device="cpu")).mteb_model_meta.name == DEFAULT_MODEL_HUB_ID
