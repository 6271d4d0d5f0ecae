"""Training data: every supported format and file type is detected from its columns and validated."""

from __future__ import annotations

import json

import pytest
from helpers import CORPUS, QUERIES

from embedtune.errors import DataError, EmbedtuneError
from embedtune.training_data import load_training_data

PAIRS = [
    {"query": "web server", "positive": "nginx serves the web", "extra": 1},
    {"query": "editor", "positive": "vim edits text", "extra": 2},
]


def _write(path, rows):
    import pandas as pd

    frame = pd.DataFrame(rows)
    suffix = path.name.split(".", 1)[1]
    if suffix == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix == "tsv" else ",", index=False)
    return path


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "tsv", "parquet"])
def test_pairs_in_every_file_type(tmp_path, suffix):
    data = load_training_data(_write(tmp_path / f"pairs.{suffix}", PAIRS))
    assert data.format == "pair" and data.dataset.column_names == ["anchor", "positive"]
    assert data.dataset["positive"] == ["nginx serves the web", "vim edits text"]


def test_beir_split_gives_every_relevant_document_as_a_positive(beir_dir):
    data = load_training_data(beir_dir, split="test")
    assert data.format == "pair"
    assert sorted(zip(data.dataset["anchor"], data.dataset["positive"], strict=True)) == sorted(
        [
            (QUERIES["q-ssh"], CORPUS["openssh"]),
            (QUERIES["q-ssh"], CORPUS["openssh-doc"]),
            (QUERIES["q-db"], CORPUS["postgres"]),
        ]
    )
    assert [p.name for p in data.files] == ["corpus.jsonl", "queries.jsonl", "test.tsv"]


def test_triplets_ntuples_and_teacher_scores(tmp_path):
    triplet = load_training_data(_write(tmp_path / "t.jsonl", [{"anchor": "a", "positive": "b", "negative": "c"}]))
    assert triplet.format == "triplet" and triplet.dataset.column_names == ["anchor", "positive", "negative_1"]
    # Negatives are ordered by their number, not by column order in the file.
    rows = [{"query": "q", "negative_2": "n2", "positive": "p", "negative_1": "n1", "scores": [0.9, 0.5, 0.4]}]
    mined = load_training_data(_write(tmp_path / "m.jsonl", rows))
    assert mined.format == "n-tuple" and mined.teacher_scores and mined.negatives == 2
    assert mined.dataset.column_names == ["anchor", "positive", "negative_1", "negative_2", "label"]
    assert mined.dataset[0]["negative_1"] == "n1" and mined.dataset[0]["label"] == [0.9, 0.5, 0.4]
    rows[0]["scores"] = [0.9, 0.5]
    with pytest.raises(DataError, match=r"m2\.jsonl:1: field 'scores': expected a list of 3 scores"):
        load_training_data(_write(tmp_path / "m2.jsonl", rows))


def test_scored_pairs_are_rescaled_from_the_declared_range(tmp_path):
    rows = [
        {"sentence1": "a cat", "sentence2": "a kitten", "score": 4.5},
        {"sentence1": "x", "sentence2": "y", "score": 0},
    ]
    path = _write(tmp_path / "sts.tsv", rows)
    with pytest.raises(DataError, match=r"sts\.tsv:2: field 'score': score 4.5 outside 0..1 \(declare the scale"):
        load_training_data(path)
    data = load_training_data(path, score_range=(0, 5))
    assert data.format == "scored-pair" and data.dataset["label"] == pytest.approx([0.9, 0.0])
    # A query/positive file with a score column is a scored pair too.
    scored = load_training_data(_write(tmp_path / "qp.csv", [{"query": "q", "positive": "p", "label": 0.5}]))
    assert scored.format == "scored-pair" and scored.dataset.column_names == ["sentence1", "sentence2", "label"]


def test_folder_of_files_is_concatenated_in_name_order(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    _write(folder / "b.jsonl", PAIRS[1:])
    _write(folder / "a.csv", PAIRS[:1])
    data = load_training_data(folder)
    assert data.dataset["anchor"] == ["web server", "editor"] and len(data.files) == 2
    _write(folder / "c.jsonl", [{"anchor": "a", "positive": "b", "negative": "c"}])
    with pytest.raises(DataError, match=r"c\.jsonl: columns anchor, positive, negative_1 differ from a\.csv's"):
        load_training_data(folder)


def test_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("question,text\nweb server,nginx\n")
    with pytest.raises(DataError, match=r"pairs\.csv: cannot tell the format from columns question, text"):
        load_training_data(path)
    path.write_text('query,positive\nweb server,nginx\n"",vim\n')
    with pytest.raises(DataError, match=r"pairs\.csv:3: field 'query': empty"):
        load_training_data(path)
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\n\n{"query": "c"}\n')
    with pytest.raises(DataError, match=r"pairs\.jsonl:3: field 'positive': missing"):
        load_training_data(path)
    path.write_text(json.dumps({"sentence1": "a", "sentence2": "b", "score": "high"}) + "\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl:1: field 'score': not a number: 'high'"):
        load_training_data(path)
    (tmp_path / "pairs.txt").write_text("x")
    with pytest.raises(EmbedtuneError, match="unsupported file type"):
        load_training_data(tmp_path / "pairs.txt")
    with pytest.raises(EmbedtuneError, match="no such file or folder"):
        load_training_data(tmp_path / "absent.jsonl")
