"""No pair is lost by mining: short rows are searched deeper, then padded or kept as plain pairs, and train.

A plain pair is written to the companion pairs file, never into the n-tuple file with its positive as its
negative (issue 31, item 13).

Also: query ids asked in the same words share their positives, so one's positive is never the other's
negative.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from helpers import QRELS, train_config

from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.mining import MiningConfig, MiningInput, mine, mine_to_file, pairs_path, write_mined
from embedtune.training import train
from embedtune.training_data import load_training_data

N_DOCS = 12


def _scores(positive: int, positive_score: float, others) -> list[float]:
    row = list(others)
    row.insert(positive, positive_score)
    return row


# Absolute margin 0.05, two negatives, ranks 1..4 at first. Per query:
# full: every other document is well below the positive (filled in ranks 1..4);
# deep: six documents score above the positive and are removed; the survivors are at ranks 8..12
#       (widened twice: 4 -> 8 finds one, 8 -> 12 the second);
# one:  one survivor in the whole corpus (padded with it); none: no survivor at all (a plain pair).
TABLE = {
    "full": (0, _scores(0, 0.9, [0.5 - 0.01 * i for i in range(11)])),
    "deep": (1, _scores(1, 0.5, [0.9] + [0.8 - 0.01 * i for i in range(6)] + [0.1 - 0.01 * i for i in range(4)])),
    "one": (2, _scores(2, 0.5, [0.9 - 0.01 * i for i in range(10)] + [0.1])),
    "none": (3, _scores(3, 0.05, [0.5 - 0.01 * i for i in range(11)])),
}


class TableRetriever:
    """Scores from a (query x document) table, so the rules and the widening see exact values."""

    name = "table"

    def __init__(self, table) -> None:
        self.table = np.asarray(table, dtype=np.float32)
        self.searched: list[int] = []  # k of each search

    def search(self, query_rows, k):
        self.searched.append(k)
        rows = np.argsort(-self.table[query_rows], axis=1, kind="stable")[:, :k]
        return np.take_along_axis(self.table[query_rows], rows, axis=1), rows

    def pair_scores(self, query_rows, doc_rows):
        return self.table[query_rows, doc_rows]


def short_case() -> tuple[MiningInput, TableRetriever]:
    names = list(TABLE)
    data = MiningInput(
        doc_ids=[f"d{i}" for i in range(N_DOCS)],
        doc_texts=[f"document number {i}" for i in range(N_DOCS)],
        query_ids=names,
        query_texts=[f"question {name}" for name in names],
        pair_query=range(len(names)),
        pair_doc=[TABLE[name][0] for name in names],
    )
    return data, TableRetriever([TABLE[name][1] for name in names])


def settings(**overrides) -> MiningConfig:
    base = {"num_negatives": 2, "max_rank": 4, "relative_margin": None, "absolute_margin": 0.05}
    return MiningConfig(**{**base, **overrides})


def ids(data: MiningInput, mined) -> dict[str, list[str]]:
    return {
        data.query_ids[data.pair_query[p]]: [data.doc_ids[r] for r in row]
        for p, row in zip(mined.pairs, mined.negatives, strict=True)
    }


def test_short_rows_are_widened_then_padded_or_kept_as_plain_pairs():
    data, retriever = short_case()
    with pytest.warns(EmbedtuneWarning, match=r"2 of 4 rows \(50.0%\) have fewer than 2 negatives .*rank 12\)"):
        mined, report = mine(data, retriever, settings(widen_max_rank=100), show_progress=False)
    assert ids(data, mined) == {
        "full": ["d1", "d2"],
        "deep": ["d8", "d9"],  # ranks 8 and 9: found by widening
        "one": ["d11", "d11"],  # its only survivor, repeated
    }
    assert [data.query_ids[data.pair_query[p]] for p in mined.plain] == ["none"]  # a plain pair, set apart
    assert retriever.searched == [4, 8, 12]  # doubled, cut to the corpus
    # Every slot of each row's final window examined once: 4 + 12 + 12 + 12.
    assert report.candidates_seen == 40 and report.filtered["known_positive"] == 4
    assert (report.rows_widened, report.rows_widened_filled, report.widened_to) == (3, 1, 12)
    assert (report.rows_short, report.rows_padded, report.rows_as_pairs, report.rows_dropped) == (2, 1, 1, 0)
    assert (report.rows_written, report.pairs, report.negatives_written) == (4, 4, 2 + 2 + 1)
    assert report.available == [1, 1, 2]
    assert mined.found.tolist() == [2, 2, 1]
    np.testing.assert_allclose(mined.scores[2:], [[0.5, 0.1, 0.1]], rtol=1e-6)
    assert sum(report.histograms["counts"]["negative"]) == 5  # the mined negatives, not the filling
    summary = report.summary()
    assert "mined 4 of 4 (query, positive) rows with 2 negatives each" in summary
    assert "rows searched again to rank 12 for want of negatives: 3 (1 filled)" in summary
    assert (
        "rows with fewer than 2 negatives: 2 (padded with their lowest-scored negative 1, as plain pairs 1" in summary
    )


def test_widening_stops_at_widen_max_rank_and_the_policy_is_the_users():
    data, retriever = short_case()
    with pytest.warns(EmbedtuneWarning):
        mined, report = mine(data, retriever, settings(widen_max_rank=8, short_rows="pair"), show_progress=False)
    assert retriever.searched == [4, 8] and report.widened_to == 8
    # deep found one survivor by rank 8; under "pair" every short row is a plain pair.
    assert ids(data, mined) == {"full": ["d1", "d2"]}
    assert [data.query_ids[data.pair_query[p]] for p in mined.plain] == ["deep", "one", "none"]
    assert (report.rows_short, report.rows_padded, report.rows_as_pairs, report.rows_written) == (3, 0, 3, 4)

    data, retriever = short_case()
    with pytest.warns(EmbedtuneWarning, match=r"2 of 4 rows \(50.0%\) .* and are left out"):
        mined, report = mine(data, retriever, settings(widen_max_rank=100, short_rows="drop"), show_progress=False)
    assert list(ids(data, mined)) == ["full", "deep"] and (report.rows_dropped, report.rows_written) == (2, 2)

    data, retriever = short_case()
    with pytest.raises(EmbedtuneError, match=r"3 of 4 rows \(75.0%\) .* that is most of the data"):
        mine(data, retriever, settings(widen_max_rank=4, short_rows="drop"), show_progress=False)
    assert retriever.searched == [4]  # widen_max_rank <= max_rank: no widening


def test_query_ids_with_the_same_text_share_their_positives():
    docs = ["nginx web server", "apache web server", "lighttpd", "caddy", "squid", "gzip"]
    data = MiningInput(
        doc_ids=["nginx", "apache", "lighttpd", "caddy", "squid", "gzip"],
        doc_texts=docs,
        query_ids=["q1", "q2", "q3"],
        query_texts=["web server", "  Web SERVER ", "compressor"],  # q1 and q2: one question, two ids
        pair_query=[0, 1, 2],
        pair_doc=[0, 1, 5],
    )
    ranking = [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]
    retriever = TableRetriever([ranking, ranking, ranking[::-1]])
    config = MiningConfig(num_negatives=2, max_rank=6, relative_margin=None)
    mined, report = mine(data, retriever, config, show_progress=False)
    # Neither twin's positive is the other's negative (before, q1 got apache and q2 nginx).
    assert ids(data, mined) == {"q1": ["lighttpd", "caddy"], "q2": ["lighttpd", "caddy"], "q3": ["squid", "caddy"]}
    assert report.filtered["known_positive"] == 2 + 2 + 1
    assert (report.shared_text_queries, report.shared_positives_removed) == (2, 2)
    assert "query ids sharing their text with another: 2 (their positives are shared; 2 candidates" in report.summary()


def test_the_written_file_keeps_every_pair_and_reads_as_n_tuples(tmp_path):
    data, retriever = short_case()
    with pytest.warns(EmbedtuneWarning):
        mined, _ = mine(data, retriever, settings(widen_max_rank=100), show_progress=False)
    path = write_mined(tmp_path / "mined.jsonl", data, mined)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["query_id"] for r in rows] == ["full", "deep", "one"]
    one = rows[2]
    assert (one["negative_ids"], one["negative_1"], one["negative_2"]) == (["d11"] * 2, *["document number 11"] * 2)
    assert one["scores"] == pytest.approx([0.5, 0.1, 0.1])
    assert all(r["positive_id"] not in r["negative_ids"] for r in rows)  # no row's positive is its negative
    plain = [json.loads(line) for line in pairs_path(path).read_text().splitlines()]
    expected = {"query": "question none", "positive": "document number 3", "query_id": "none", "positive_id": "d3"}
    assert plain == [expected]
    training = load_training_data(path)
    assert (training.format, training.teacher_scores, len(training.dataset), training.negatives) == (
        "n-tuple",
        True,
        3,
        2,
    )
    assert load_training_data(pairs_path(path)).format == "pair"
    mined.plain = mined.plain[:0]  # a later run without plain pairs leaves no stale companion
    write_mined(path, data, mined)
    assert not pairs_path(path).exists()


def test_mine_to_file_writes_every_pair_of_a_tiny_corpus(tmp_path, beir_dir):
    # Eight documents, five pairs, seven negatives asked for, only documents BM25 does not match at all
    # allowed: "web server" also matches PostgreSQL's "database server", so its row is short.
    out = tmp_path / "mined.jsonl"
    config = MiningConfig(num_negatives=7, max_rank=8, relative_margin=None, max_score=0.0)
    with pytest.warns(EmbedtuneWarning, match="have fewer than 7 negatives"):
        report = mine_to_file(beir_dir, out, retriever="bm25", config=config, show_progress=False)
    assert report.rows_short > 0 and report.rows_dropped == 0
    plain = pairs_path(out).read_text().splitlines() if pairs_path(out).exists() else []
    assert report.rows_written == report.pairs == len(QRELS["train"]) == len(out.read_text().splitlines()) + len(plain)
    saved = json.loads(out.with_name("mined.report.json").read_text())
    assert saved["rows_padded"] + saved["rows_as_pairs"] == saved["rows_short"] == report.rows_short
    assert len(plain) == saved["rows_as_pairs"] and (saved["pairs_file"] is not None) == bool(plain)


@pytest.mark.parametrize("loss", ["mnrl", "cached-mnrl", "margin-mse"])
def test_training_on_padded_rows_and_plain_pairs(tmp_path, tiny_st, loss):
    data, retriever = short_case()
    with pytest.warns(EmbedtuneWarning):
        mined, _ = mine(data, retriever, settings(widen_max_rank=100), show_progress=False)
    path = write_mined(tmp_path / "mined.jsonl", data, mined)
    config = train_config(
        tmp_path / "model",
        tiny_st,
        path,
        loss=loss,
        max_steps=4,
        batch_size=2,
        learning_rate=1e-3,
        dev=False,
        mini_batch_size=1,
    )
    result = train(config)
    assert (result.output / "modules.json").is_file()
    assert result.losses and all(np.isfinite(loss) for _, loss in result.losses)
    assert json.loads((result.output / "embedtune_train.json").read_text())["loss"] == loss


def test_train_mine_trains_the_plain_pairs_as_a_second_dataset(tmp_path, beir_dir, tiny_st):
    from embedtune.training import TrainConfig
    from embedtune.workflows import mine_for_training, mined_path

    selection = MiningConfig(num_negatives=7, max_rank=8, relative_margin=None, max_score=0.0, short_rows="pair")
    config = TrainConfig(output=tmp_path / "model", data=beir_dir, model=str(tiny_st))
    with pytest.warns(EmbedtuneWarning, match="kept as plain pairs"):
        mined, report = mine_for_training(config, selection, retriever="bm25")
    assert report.rows_as_pairs > 0 and mined.data == mined_path(config.output)
    assert mined.more_data == (pairs_path(mined_path(config.output)),)
    result = train(dataclasses.replace(mined, max_steps=2, batch_size=2, dev=False, show_progress=False))
    datasets = json.loads((result.output / "embedtune_train.json").read_text())["sampling"]["datasets"]
    assert len(datasets) == 2 and result.rows == report.pairs  # every pair trained: n-tuples and plain pairs
    margin = TrainConfig(output=tmp_path / "m2", data=beir_dir, model=str(tiny_st), loss="margin-mse")
    with pytest.warns(EmbedtuneWarning):
        assert mine_for_training(margin, selection, retriever="bm25")[0].more_data == ()  # they would teach nothing
