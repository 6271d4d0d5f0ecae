"""Mining a BEIR split into a file: input loaded, retriever chosen, negatives selected, rows and report written.

Rows are written atomically as jsonl (gzip for ``.gz``) in the n-tuple format ``embedtune train``
reads as is; the report's JSON and PNG go beside them (:func:`~embedtune.mining.report.report_paths`).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from embedtune.errors import EmbedtuneError
from embedtune.io import atomic_files, check_destination, check_writable, refuse_overlap, writing
from embedtune.mining.config import MiningConfig, MiningInput, load_mining_input
from embedtune.mining.report import MiningReport, pairs_path, plot_histograms, report_paths
from embedtune.mining.selection import MinedRows, mine
from embedtune.retrieval import BM25Retriever, DenseRetriever, Reranker, Retriever, ScorerRetriever, Searcher

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedtune.encoding import EncodeSettings

RETRIEVERS = ("dense", "bm25")


def _open_output(path: Path, *, gzipped: bool):
    # Level 6 (zlib's default) writes about three times faster than gzip.open's 9, for a few % more bytes.
    return gzip.open(path, "wt", encoding="utf-8", compresslevel=6) if gzipped else path.open("w", encoding="utf-8")


def write_mined(path: Path, data: MiningInput, mined: MinedRows, report: MiningReport | None = None) -> Path:
    """Write rows as jsonl (gzip if ``path`` ends in .gz); ``embedtune train`` reads it as is.

    The plain pairs (rows no negative survived for) go to :func:`pairs_path` beside it, never into the
    n-tuple file (:mod:`embedtune.mining.short_rows`). With ``report``, its JSON and chart are written
    too (:func:`report_paths`). The files are one output set, committed as a unit
    (:func:`embedtune.io.atomic_files`): a kill or a full disk never leaves new rows beside an old
    report or chart, and a companion left by an earlier run of the same output goes when this one has none.
    """
    path = Path(path)
    companion = pairs_path(path) if len(mined.plain) else None
    stale = [pairs_path(path)] if companion is None and pairs_path(path).exists() else []
    reports = report_paths(path) if report is not None else ()
    started = time.perf_counter()
    with atomic_files(path, companion, *reports, remove=stale) as temps:
        files = iter(temps)
        with writing(path):  # a full disk names the file that did not fit, not its temporary
            _write_rows(next(files), path, data, mined)
        if companion is not None:
            with writing(companion):
                _write_pairs(next(files), companion, data, mined.plain)
        if report is not None:
            report.pairs_file = str(companion) if companion is not None else None
            report.seconds["write"] = round(time.perf_counter() - started, 2)
            with writing(reports[0]):
                next(files).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
            with writing(reports[1]):
                plot_histograms(report, next(files), atomic=False)  # already the set's temporary
    return path


def _write_rows(tmp: Path, path: Path, data: MiningInput, mined: MinedRows) -> None:
    with _open_output(tmp, gzipped=path.suffix == ".gz") as f:
        for pair, negs, scores in zip(mined.pairs, mined.negatives, mined.scores, strict=True):
            q, d = data.pair_query[pair], data.pair_doc[pair]
            row = {"query": data.query_texts[q], "positive": data.doc_texts[d]}
            row.update({f"negative_{i}": data.doc_texts[r] for i, r in enumerate(negs, start=1)})
            row["scores"] = [round(float(s), 6) for s in scores]
            row.update(
                query_id=data.query_ids[q], positive_id=data.doc_ids[d], negative_ids=[data.doc_ids[r] for r in negs]
            )
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_pairs(tmp: Path, path: Path, data: MiningInput, plain) -> None:
    with _open_output(tmp, gzipped=path.suffix == ".gz") as f:
        for pair in plain:
            q, d = data.pair_query[pair], data.pair_doc[pair]
            row = {"query": data.query_texts[q], "positive": data.doc_texts[d]}
            row.update(query_id=data.query_ids[q], positive_id=data.doc_ids[d])
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _refuse_overlap(output: Path, data: Path, model, index, indexes_dir: Path | None, scorer) -> None:
    """The rows and their report may not be written over or inside the data, model, index or scorer read."""
    from embedtune.index import DEFAULT_INDEXES_DIR

    inputs = [Path(data), *(Path(p) for p in (model, scorer) if isinstance(p, (str, Path)) and Path(p).exists())]
    if index is not None:
        inputs += [p for p in (Path(indexes_dir or DEFAULT_INDEXES_DIR) / index, Path(index)) if p.exists()]
    for path in (output, pairs_path(output), *report_paths(output)):
        refuse_overlap(path, inputs)


def mine_to_file(
    data: Path,
    output: Path,
    *,
    split: str = "train",
    retriever: str = "dense",
    model: str | Path | SentenceTransformer | None = None,
    config: MiningConfig | None = None,
    encoding: EncodeSettings | None = None,
    model_name: str | None = None,
    index: str | Path | None = None,
    indexes_dir: Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    scorer: str | Path | None = None,
) -> MiningReport:
    """Mine a BEIR split into ``output`` (jsonl[.gz]) plus ``<stem>.report.json`` and ``<stem>.report.png``,
        and ``<stem>.pairs.jsonl[.gz]`` when some rows kept no negative (:func:`pairs_path`).

        ``retriever`` is ``dense`` (``model`` encodes corpus and queries as ``encoding`` says; the default
        model if ``None``) or ``bm25``. ``model_name`` names a loaded ``model`` in the report. ``index`` (a
        name under ``indexes_dir``, or a path) mines with the index's own search (its model, calibrated mode and
    knobs: the first stage the user will run) instead of encoding the corpus.
        ``scorer`` (a cross-encoder directory) rescores every candidate and positive: the margins that filter
        false negatives and the scores written for MarginMSE are then the teacher's.
    """
    config = config or MiningConfig()
    config.validate()
    output = Path(output)
    if not output.name.endswith((".jsonl", ".jsonl.gz")):
        raise EmbedtuneError(f"{output}: the mined file must end in .jsonl or .jsonl.gz")
    _refuse_overlap(output, data, model, index, indexes_dir, scorer)
    check_destination(output, overwrite)
    check_writable(output)
    if retriever not in RETRIEVERS:
        raise EmbedtuneError(f"unknown retriever '{retriever}' (choose from {', '.join(RETRIEVERS)})")
    teacher = Reranker(scorer) if scorer is not None else None  # a bad directory fails before the retrieval
    inputs = load_mining_input(Path(data), split)
    started = time.perf_counter()
    if retriever == "bm25":
        searcher: Retriever = BM25Retriever(inputs, show_progress=show_progress)
    elif index is not None:
        from embedtune.index import DEFAULT_INDEXES_DIR

        found = Searcher.open(index, indexes_dir=indexes_dir or DEFAULT_INDEXES_DIR)
        searcher = found.retriever(inputs.query_texts, doc_ids=inputs.doc_ids, show_progress=show_progress)
        missing = sorted(searcher.unindexed)
        if missing:  # those documents could never be mined, nor their positives scored
            raise EmbedtuneError(
                f"index '{found.index.name}' lacks {len(missing)} of the {len(inputs.doc_ids)} documents of the "
                f"mining corpus (e.g. {', '.join(missing[:3])}); build it from this corpus, or mine with a model"
            )
    else:
        name = f"dense:{model_name}" if model_name else None
        searcher = DenseRetriever.encode(model, inputs, encoding, name=name, show_progress=show_progress)
    if teacher is not None:
        searcher = ScorerRetriever(searcher, teacher, inputs.query_texts, inputs.doc_texts)
    prepare_seconds = round(time.perf_counter() - started, 2)
    mined, report = mine(inputs, searcher, config, show_progress=show_progress)
    report.seconds["prepare"] = prepare_seconds
    write_mined(output, inputs, mined, report)
    return report
