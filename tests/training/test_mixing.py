"""Training runs with weights, difficulty weighting and several datasets: they train, and the record says how."""

from __future__ import annotations

import json

import pytest
from helpers import launch, run, train_config

from embedtune.errors import EmbedtuneError
from embedtune.training import train

QUICK = {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-4, "dev": False}


def _record(output) -> dict:
    return json.loads((output / "embedtune_train.json").read_text())


def _write(path, rows: list[dict]):
    import pandas as pd

    frame = pd.DataFrame(rows)
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


def _rows(fmt: str, n: int = 6) -> list[dict]:
    rows = []
    for i in range(n):
        if fmt == "scored-pair":
            row = {"sentence1": f"first sentence {i}", "sentence2": f"second sentence {i}", "score": i / n}
        else:
            row = {"query": f"query number {i}", "positive": f"a document about topic {i}"}
            if fmt in ("triplet", "n-tuple"):
                row["negative"] = f"an unrelated text {i}"
            if fmt == "n-tuple":
                row["negative_2"] = f"another unrelated text {i}"
                row["scores"] = [0.9, 0.2, 0.1]
        rows.append({**row, "weight": 1 + i % 3})
    return rows


@pytest.mark.parametrize(
    ("fmt", "name", "loss"),
    [
        ("pair", "rows.jsonl", "mnrl"),
        ("triplet", "rows.csv", "triplet"),
        ("n-tuple", "rows.jsonl", "margin-mse"),
        ("scored-pair", "rows.tsv", "cosent"),
        ("pair", "rows.parquet", "cached-mnrl"),
    ],
)
def test_a_weight_column_trains_with_every_format(tmp_path, tiny_st, fmt, name, loss):
    data = _write(tmp_path / name, _rows(fmt))
    config = train_config(tmp_path / "model", tiny_st, data, loss=loss, mini_batch_size=2, **QUICK)
    result = train(config)
    record = _record(result.output)
    assert result.steps == 2 and record["loss"] == loss
    assert record["sampling"]["datasets"][0]["weighted"] is True and record["sampling"]["mix"] is None
    assert record["choices"]["weights"]["value"] == "weight column"


def test_difficulty_weighting_is_computed_and_recorded(tmp_path, tiny_st, beir_dir):
    config = train_config(tmp_path / "model", tiny_st, beir_dir, weight_by="difficulty", **QUICK)
    result = train(config)
    choice = _record(result.output)["choices"]["weights"]
    assert choice["value"] == "difficulty" and "1 - cosine(query, positive)" in choice["why"]
    assert "weights" in (result.output / "README.md").read_text()  # the card lists the choices


@pytest.mark.parametrize("mix", ["proportional", "round-robin"])
def test_two_datasets_of_different_formats_train_together(tmp_path, tiny_st, beir_dir, mix):
    sts = _write(tmp_path / "sts.jsonl", [{k: v for k, v in r.items() if k != "weight"} for r in _rows("scored-pair")])
    config = train_config(tmp_path / "model", tiny_st, beir_dir, more_data=(sts,), mix=mix, **{**QUICK, "max_steps": 4})
    result = train(config)
    record = _record(result.output)
    assert result.steps == 4 and result.rows == 5 + 6
    assert record["sampling"]["mix"] == mix
    assert [(d["name"], d["format"], d["loss"]) for d in record["sampling"]["datasets"]] == [
        ("beir", "pair", "mnrl"),
        ("sts", "scored-pair", "cosent"),
    ]
    assert (
        record["choices"]["mix"]["value"] == mix and "dev set comes from the first" in record["choices"]["mix"]["why"]
    )
    assert str(sts) in record["data_files"]


def test_one_loss_for_all_datasets_must_fit_each_of_them(tmp_path, tiny_st, beir_dir):
    sts = _write(tmp_path / "sts.jsonl", _rows("scored-pair"))
    config = train_config(tmp_path / "model", tiny_st, beir_dir, more_data=(sts,), loss="mnrl", **QUICK)
    with pytest.raises(EmbedtuneError, match=r"sts.jsonl: loss 'mnrl' needs columns"):
        train(config)


def test_cli_takes_repeated_data_and_shows_the_new_options(tmp_path, tiny_st, beir_dir):
    help_text = " ".join(run("train", "--help").output.split())
    assert "--mix [proportional|round-robin]" in help_text and "--weight-by [none|difficulty]" in help_text
    assert "Repeat to train on several datasets" in help_text
    pairs = _write(tmp_path / "pairs.jsonl", _rows("pair"))
    result = run(
        "train", "-o", tmp_path / "m", "-m", tiny_st, "--data", beir_dir, "--data", pairs, "--mix", "round-robin",
        "--max-steps", "2", "--batch-size", "2", "--no-dev", "--seed", "0", "--json", "-q", "--no-progress",
    )  # fmt: skip
    payload = json.loads(result.stdout)
    assert payload["choices"]["mix"]["value"] == "round-robin" and payload["rows"] == 5 + 6
    assert _record(tmp_path / "m")["config"]["more_data"] == [str(pairs)]


def test_two_processes_train_a_weighted_mix_of_two_formats(tmp_path, tiny_st, beir_dir):
    sts = _write(tmp_path / "sts.jsonl", _rows("scored-pair", 8))
    output = tmp_path / "model"
    args = ["-o", output, "-m", tiny_st, "--data", beir_dir, "--data", sts, "--max-steps", 4, "--batch-size", 2]
    done = launch("-m", "embedtune", "train", *args, "--no-dev", "--precision", "fp32", "--seed", 0, "--json")
    assert done.returncode == 0, done.stderr[-3000:]  # a step whose ranks took different datasets would hang
    record = _record(output)
    assert record["processes"] == 2 and record["sampling"]["mix"] == "proportional" and record["steps"] == 4
    assert [d["weighted"] for d in record["sampling"]["datasets"]] == [False, True]
