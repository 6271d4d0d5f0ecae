"""Training data: read any supported file or folder, detect its format from its columns, validate it.

Users arrive with whatever their pipeline wrote: (query, positive) pairs, triplets, mined n-tuples
with teacher scores, STS-style scored pairs on a 0-5 scale, or a BEIR folder. Rather than make them
rename columns to suit one loss, the format is read off the column names and every row is checked
(non-empty texts, scores in the declared range), with the file and line of the first bad row in the
error. The result is a ``datasets.Dataset`` whose columns are in the order the sentence-transformers
losses expect: ``anchor, positive, negative_1..n`` (or ``sentence1, sentence2``) then ``label``.

Any format may carry a ``weight`` column (a finite number above 0): how often the row is drawn,
relative to the others (:mod:`embedtune.training.sampling`). It stays a column of the dataset, so
that every row filter (the held-out dev slice) keeps each weight with its row, and is never one of
``text_columns``; the run takes it out before the trainer sees the rows, so it never reaches a loss
as a text or a label.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from embedtune.data import find_data_file, load_split, qrels_path, read_jsonl, read_lines
from embedtune.errors import DataError, EmbedtuneError
from embedtune.io import finish_commits
from embedtune.text import lone_surrogate

if TYPE_CHECKING:
    from datasets import Dataset

SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".tsv", ".parquet")
# Accepted column names, first match wins; the value is the canonical name training uses.
ANCHOR_COLUMNS = ("query", "anchor", "question")
POSITIVE_COLUMNS = ("positive", "document", "passage", "answer")
SENTENCE_COLUMNS = (("sentence1", "sentence2"), ("text1", "text2"))
SCORE_COLUMNS = ("score", "label", "similarity")
TEACHER_SCORES = "scores"
WEIGHT = "weight"  # per-row sampling weight, > 0
_NEGATIVE = re.compile(r"^negative(?:_(\d+))?$")

Format = Literal["pair", "triplet", "n-tuple", "scored-pair"]


@dataclass
class TrainingData:
    """A validated training set and what was detected about it.

    ``format`` is ``pair`` (anchor, positive), ``triplet`` (one negative), ``n-tuple`` (several
    negatives) or ``scored-pair`` (two texts and a similarity in [0, 1]). ``teacher_scores`` says the
    tuples carry a retriever/teacher score per text (positive first), which MarginMSE distils from.
    """

    dataset: Dataset
    format: Format
    files: list[Path]
    text_columns: list[str]
    teacher_scores: bool = False
    source_columns: dict[str, str] = field(default_factory=dict)  # canonical name -> name in the file

    @property
    def weights(self) -> list[float] | None:
        """The ``weight`` column (aligned with the rows), or None when the data has none."""
        return list(self.dataset[WEIGHT]) if WEIGHT in self.dataset.column_names else None

    @property
    def negatives(self) -> int:
        return sum(1 for c in self.text_columns if c.startswith("negative"))

    def describe(self) -> str:
        extra = " with teacher scores" if self.teacher_scores else ""
        extra += " and weights" if WEIGHT in self.dataset.column_names else ""
        return f"{len(self.dataset):,} {self.format}s{extra} ({', '.join(self.text_columns)})"


def data_files(source: Path) -> list[Path]:
    """The files a folder of training data consists of (sorted), or the file itself."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise EmbedtuneError(f"{source}: no such file or folder")
    files = sorted(p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES))
    if not files:
        raise EmbedtuneError(f"{source}: no training files ({', '.join(SUFFIXES)}) and no BEIR corpus.jsonl")
    return files


def is_beir_folder(source: Path) -> bool:
    return Path(source).is_dir() and any((Path(source) / n).is_file() for n in ("corpus.jsonl", "corpus.jsonl.gz"))


def beir_files(root: Path, split: str) -> list[Path]:
    return [find_data_file(root, "corpus.jsonl"), find_data_file(root, "queries.jsonl"), qrels_path(root, split)]


def load_training_data(
    source: Path, *, split: str = "train", score_range: tuple[float, float] | None = None
) -> TrainingData:
    """Read training data from a BEIR folder (every relevant document a positive), a file or a folder.

    ``score_range`` declares the scale of a similarity column (e.g. ``(0, 5)`` for STS-B); scores are
    rescaled to [0, 1] and any score outside the range is an error, since a silently clipped or
    mis-scaled label trains the wrong target.
    """
    from datasets import Dataset

    source = Path(source)
    if is_beir_folder(source):
        data = load_split(source, split)
        rows = [(data.queries[q], data.corpus[d]) for q, docs in data.qrels.items() for d in docs]
        dataset = Dataset.from_dict({"anchor": [q for q, _ in rows], "positive": [p for _, p in rows]})
        return TrainingData(dataset, "pair", beir_files(source, split), ["anchor", "positive"])
    files = data_files(source)
    for path in files:  # a mined file committed with its companion and report: never read half a commit
        finish_commits(path)
    parts = [_read_file(path, score_range) for path in files]
    first = parts[0]
    for path, part in zip(files[1:], parts[1:], strict=True):
        if part.column_names != first.column_names:
            raise DataError(
                path,
                f"columns {', '.join(part.column_names)} differ from {files[0].name}'s {', '.join(first.column_names)}",
            )
    if len(parts) > 1:
        from datasets import concatenate_datasets

        dataset = concatenate_datasets(parts)
    else:
        dataset = first
    return _describe(dataset, files)


def _describe(dataset: Dataset, files: list[Path]) -> TrainingData:
    columns = dataset.column_names
    texts = [c for c in columns if c not in ("label", TEACHER_SCORES, WEIGHT)]
    if texts[0] == "sentence1":
        fmt: Format = "scored-pair"
    else:
        n = len(texts) - 2
        fmt = "pair" if n == 0 else "triplet" if n == 1 else "n-tuple"
    if TEACHER_SCORES in columns:
        dataset = dataset.rename_column(TEACHER_SCORES, "label")
    return TrainingData(dataset, fmt, files, texts, teacher_scores=TEACHER_SCORES in columns)


def _map_columns(path: Path, columns: Iterable[str]) -> dict[str, str]:
    """Map canonical column names to the file's names (a ``weight`` column with any format)."""
    columns = list(columns)
    mapping = _map_format(path, columns)
    return mapping | ({WEIGHT: WEIGHT} if WEIGHT in columns else {})


def _map_format(path: Path, columns: list[str]) -> dict[str, str]:
    """The format's columns, or say what is missing and what was found."""
    found = set(columns)
    mapping: dict[str, str] = {}
    for pair in SENTENCE_COLUMNS:
        if set(pair) <= found:
            score = next((c for c in SCORE_COLUMNS if c in found), None)
            if score is None:
                raise DataError(
                    path, f"sentence pair columns {', '.join(pair)} need a score column ({', '.join(SCORE_COLUMNS)})"
                )
            return {"sentence1": pair[0], "sentence2": pair[1], "label": score}
    anchor = next((c for c in ANCHOR_COLUMNS if c in found), None)
    positive = next((c for c in POSITIVE_COLUMNS if c in found), None)
    if anchor is None or positive is None:
        raise DataError(
            path,
            "cannot tell the format from columns "
            f"{', '.join(columns) or '(none)'}: expected query/anchor + positive [+ negative_1..n] [+ scores], "
            "or sentence1 + sentence2 + score",
        )
    mapping = {"anchor": anchor, "positive": positive}
    negatives = sorted(
        ((int(m.group(1) or 0), c) for c in columns if (m := _NEGATIVE.match(c))), key=lambda item: item[0]
    )
    for i, (_, column) in enumerate(negatives, start=1):
        mapping[f"negative_{i}"] = column
    score = next((c for c in SCORE_COLUMNS if c in found), None)
    if TEACHER_SCORES in found:
        mapping[TEACHER_SCORES] = TEACHER_SCORES
    elif score is not None:
        # A score on a (query, positive) pair is a similarity label: train as a scored pair.
        if negatives:
            raise DataError(path, f"a single '{score}' column with negatives is ambiguous; use 'scores' (one per text)")
        return {"sentence1": anchor, "sentence2": positive, "label": score}
    return mapping


def _read_file(path: Path, score_range: tuple[float, float] | None) -> Dataset:
    from datasets import Dataset

    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        objects = list(read_jsonl(path))
        if not objects:
            raise DataError(path, "no rows")
        mapping = _map_columns(path, objects[0][1].keys())
        rows = {canonical: [] for canonical in mapping}
        lines = []
        for line, obj in objects:
            for canonical, column in mapping.items():
                if column not in obj:
                    raise DataError(path, "missing", line=line, field=column)
                rows[canonical].append(obj[column])
            lines.append(line)
    else:
        rows, mapping, lines = _read_tabular(path, name)
    _validate(path, rows, mapping, lines, score_range)
    return Dataset.from_dict(rows)


def _read_tabular(path: Path, name: str) -> tuple[dict[str, list], dict[str, str], list[int]]:
    if name.endswith((".csv", ".tsv")):
        return _read_delimited(path, "\t" if name.endswith(".tsv") else ",")
    if not name.endswith(".parquet"):
        raise EmbedtuneError(f"{path}: unsupported file type (use one of {', '.join(SUFFIXES)})")
    from datasets import load_dataset

    try:
        dataset = load_dataset("parquet", data_files=str(path), split="train")
    except Exception as e:  # datasets wraps parser errors in several exception types
        raise DataError(path, f"cannot parse as parquet: {str(e).splitlines()[0]}") from e
    if len(dataset) == 0:
        raise DataError(path, "no rows")
    mapping = _map_columns(path, dataset.column_names)
    table = dataset.select_columns(list(mapping.values())).to_dict()
    rows = {canonical: table[column] for canonical, column in mapping.items()}
    return rows, mapping, list(range(1, 1 + len(dataset)))  # "line" = row number for parquet


def _read_delimited(path: Path, sep: str) -> tuple[dict[str, list], dict[str, str], list[int]]:
    """Rows of a CSV/TSV file with a header, each located by the line it starts on.

    Python's ``csv`` in strict mode, not a lenient parser: a quote left open to the end of the file
    is an error at the line it opens, and a quoted field that runs over several lines whose later
    lines hold the delimiter is refused as the unclosed quote it almost always is (it would
    otherwise swallow the rows below it into one text). A row with more or fewer fields than the
    header is an error at its own line.
    """
    what = "tab" if sep == "\t" else "comma"
    reader = csv.reader((text + "\n" for _, text in read_lines(path)), delimiter=sep, strict=True)
    header: list[str] | None = None
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row or (header is not None and not "".join(row).strip()):
                continue
            if header is None:
                header = [c.strip() for c in row]
                continue
            spanned = [f for f in row if "\n" in f and any(sep in part for part in f.split("\n")[1:])]
            if spanned:
                raise DataError(
                    path,
                    f"a quoted field runs over lines {line}-{reader.line_num} and holds {what}s: an unclosed quote?",
                    line=line,
                )
            if len(row) != len(header):
                raise DataError(path, f"expected {len(header)} {what}-separated fields, got {len(row)}", line=line)
            records.append((line, row))
    except csv.Error as e:
        raise DataError(path, f"malformed {what}-separated row ({e}): an unclosed quote?", line=start) from e
    if header is None or not records:
        raise DataError(path, "no rows")
    mapping = _map_columns(path, header)
    rows = {canonical: [row[header.index(column)] for _, row in records] for canonical, column in mapping.items()}
    return rows, mapping, [line for line, _ in records]


def _validate(
    path: Path,
    rows: dict[str, list],
    mapping: dict[str, str],
    lines: list[int],
    score_range: tuple[float, float] | None,
) -> None:
    """Check every text is a non-empty string and every score a finite number in range; rescale scores."""
    texts = [c for c in rows if c not in ("label", TEACHER_SCORES, WEIGHT)]
    for canonical in texts:
        for line, value in zip(lines, rows[canonical], strict=True):
            if not isinstance(value, str) or not value.strip():
                problem = "empty" if isinstance(value, str) or value is None else f"not a string ({value!r})"
                raise DataError(path, problem, line=line, field=mapping[canonical])
            if (position := lone_surrogate(value)) is not None:
                raise DataError(path, f"lone surrogate at character {position}", line=line, field=mapping[canonical])
    if "label" in rows:
        low, high = score_range or (0.0, 1.0)
        if not low < high:
            raise EmbedtuneError(f"score range {low}..{high}: the low end must be below the high end")
        scaled = []
        for line, value in zip(lines, rows["label"], strict=True):
            score = _number(path, line, mapping["label"], value)
            if not low <= score <= high:
                hint = "" if score_range else " (declare the scale, e.g. score_range (0, 5))"
                raise DataError(
                    path, f"score {score:g} outside {low:g}..{high:g}{hint}", line=line, field=mapping["label"]
                )
            scaled.append((score - low) / (high - low))
        rows["label"] = scaled
    if TEACHER_SCORES in rows:
        want = len(texts) - 1
        for line, value in zip(lines, rows[TEACHER_SCORES], strict=True):
            if not isinstance(value, list) or len(value) != want:
                got = len(value) if isinstance(value, list) else type(value).__name__
                raise DataError(
                    path,
                    f"expected a list of {want} scores (positive, then each negative), got {got}",
                    line=line,
                    field=TEACHER_SCORES,
                )
            for score in value:
                _number(path, line, TEACHER_SCORES, score)
    if WEIGHT in rows:
        rows[WEIGHT] = [_weight(path, line, value) for line, value in zip(lines, rows[WEIGHT], strict=True)]


def _weight(path: Path, line: int, value) -> float:
    """A row's weight: a finite number above 0 (0 or below would never draw the row, or break the draw)."""
    weight = _number(path, line, WEIGHT, value)
    if weight <= 0:
        raise DataError(path, f"weight {weight:g} is not above 0", line=line, field=WEIGHT)
    return weight


def _number(path: Path, line: int, column: str, value) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError as e:
            raise DataError(path, f"not a number: '{value}'", line=line, field=column) from e
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(path, f"not a finite number: {value!r}", line=line, field=column)
    return float(value)
