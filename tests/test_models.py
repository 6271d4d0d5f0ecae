"""Finding models: the bundled default, Hub ids in the local Hugging Face cache, and a release check."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import hf_cache

from embedtune.errors import EmbedtuneError
from embedtune.models import (
    DEFAULT_MODEL_HUB_ID,
    check_sentence_transformers_version,
    default_model_path,
    hub_model_id,
    load_model,
    model_name,
    resolve_model_path,
)


def test_a_hub_id_resolves_from_the_local_cache(tmp_path, tiny_st, monkeypatch):
    snapshot = hf_cache(tmp_path / "hub", "someone/tiny-st", tiny_st)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    path = resolve_model_path("someone/tiny-st")
    assert path == snapshot.resolve() or path == snapshot
    assert hub_model_id(path) == "someone/tiny-st"
    assert load_model("someone/tiny-st", device="cpu").encode(["a text"]).shape == (1, 32)


def test_a_model_is_named_by_what_the_user_gave_not_by_its_snapshot_folder(tmp_path, tiny_st, monkeypatch):
    hf_cache(tmp_path / "hub", "someone/tiny-st", tiny_st)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model_path("someone/tiny-st").name != "tiny-st"  # a commit hash
    assert model_name("someone/tiny-st") == "tiny-st"
    assert model_name(None) == model_name("default") == "default"
    assert model_name(str(tiny_st) + "/") == model_name(tiny_st) == tiny_st.name
    monkeypatch.chdir(tiny_st)
    assert model_name(".") == tiny_st.name


def test_a_hub_id_not_in_the_cache_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(EmbedtuneError, match=r"^someone/absent: .*local Hugging Face cache.*hf download") as info:
        resolve_model_path("someone/absent")
    assert "\n" not in str(info.value)


def test_hub_ids_known_from_the_files(tmp_path, tiny_bert, tiny_st):
    assert hub_model_id(default_model_path()) == DEFAULT_MODEL_HUB_ID
    # A sentence-transformers model's _name_or_path names its parent, not itself.
    assert hub_model_id(tiny_st) is None
    plain = tmp_path / "plain"
    shutil.copytree(tiny_bert, plain)
    config = json.loads((plain / "config.json").read_text())
    (plain / "config.json").write_text(json.dumps({**config, "_name_or_path": "google-bert/bert-base-uncased"}))
    assert hub_model_id(plain) == "google-bert/bert-base-uncased"


def test_an_old_sentence_transformers_is_refused_with_one_line():
    with pytest.raises(EmbedtuneError, match=r"^sentence-transformers 5\.1\.2 is too old: embedtune needs 6\.0"):
        check_sentence_transformers_version("5.1.2")
    check_sentence_transformers_version("6.0.1")


def test_loading_a_model_checks_the_installed_release(tiny_st, monkeypatch):
    import sentence_transformers

    monkeypatch.setattr(sentence_transformers, "__version__", "5.1.2")
    with pytest.raises(EmbedtuneError, match="too old"):
        load_model(tiny_st, device="cpu")
