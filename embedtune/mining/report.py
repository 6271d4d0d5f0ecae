"""The mining report: what happened to every candidate, as counts, score histograms, JSON and a PNG.

The histograms' bin edges are shared by every group and stored with the counts, so the plot and the
JSON show the same numbers; warnings raised while mining are kept in the report beside them.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from embedtune.errors import EmbedtuneWarning


@dataclass
class MiningReport:
    """What happened to every candidate, for the user to judge the mined data before training on it.

    ``candidates_seen`` counts (row, candidate) slots examined, in the rank window and in the ranks
    added by widening; ``filtered`` counts each removed candidate once, under the first rule that
    removed it. ``rows_widened`` rows were searched again deeper (down to rank ``widened_to``) and
    ``rows_widened_filled`` of them found all their negatives there. ``rows_short`` rows still had
    fewer than ``num_negatives`` survivors (``available`` = how many rows had 0, 1, ... survivors,
    capped at ``num_negatives``): ``rows_padded`` were kept with their own lowest-scored negative
    repeated, ``rows_as_pairs`` as plain pairs (in ``pairs_file``, not in the n-tuple file),
    ``rows_dropped`` were left out (``short_rows``); ``rows_written`` counts both files' rows.
    ``negatives_written`` counts mined negatives, not the repeats that fill a row.
    ``shared_text_queries`` query ids share their (normalised) text with another id, and so their
    positives; ``shared_positives_removed`` candidates were removed only for being a positive (or a
    copy of one) of such a twin (counted within ``known_positive`` / ``positive_duplicate``).
    """

    retriever: str
    config: dict
    documents: int
    queries: int
    pairs: int
    window: list[int]
    candidates_seen: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    negatives_written: int = 0
    rows_written: int = 0
    rows_short: int = 0
    rows_widened: int = 0
    rows_widened_filled: int = 0
    widened_to: int = 0
    rows_padded: int = 0
    rows_as_pairs: int = 0
    rows_dropped: int = 0
    pairs_file: str | None = None  # the companion file of the plain pairs, when there are any
    shared_text_queries: int = 0
    shared_positives_removed: int = 0
    available: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    histograms: dict = field(default_factory=dict)

    def warn(self, message: str) -> None:
        """Warn now and keep the message for the report's JSON."""
        warnings.warn(message, EmbedtuneWarning, stacklevel=3)
        self.warnings.append(message)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for the console."""
        filtered = ", ".join(f"{rule} {n}" for rule, n in self.filtered.items())
        lines = [
            f"mined {self.rows_written} of {self.pairs} (query, positive) rows with {self.config['num_negatives']} "
            f"negatives each ({self.retriever}, ranks {self.window[0]}..{self.window[1]} "
            f"of {self.documents} documents)",
            f"candidates seen {self.candidates_seen}; removed: {filtered}",
            f"rows searched again to rank {self.widened_to} for want of negatives: {self.rows_widened} "
            f"({self.rows_widened_filled} filled)"
            if self.rows_widened
            else "rows searched again for want of negatives: 0",
            f"rows with fewer than {self.config['num_negatives']} negatives: {self.rows_short} (padded with their "
            f"lowest-scored negative {self.rows_padded}, as plain pairs {self.rows_as_pairs}, "
            f"dropped {self.rows_dropped})",
        ]
        if self.pairs_file:
            lines.append(f"plain pairs (no negative survived the filters) written to {self.pairs_file}")
        if self.shared_text_queries:
            lines.append(
                f"query ids sharing their text with another: {self.shared_text_queries} (their positives are "
                f"shared; {self.shared_positives_removed} candidates removed as a twin's positive)"
            )
        return "\n".join(lines)


def histograms(positives: np.ndarray, negatives: np.ndarray, removed: dict[str, np.ndarray], bins: int = 50) -> dict:
    """Counts over shared bin edges, so the report's plot and JSON show the same numbers."""
    groups = {"positive": positives, "negative": negatives, **{f"removed:{k}": v for k, v in removed.items() if v.size}}
    values = np.concatenate([v for v in groups.values() if v.size])
    edges = np.histogram_bin_edges(values, bins=bins)
    return {
        "edges": [round(float(e), 6) for e in edges],
        "counts": {name: np.histogram(v, bins=edges)[0].tolist() for name, v in groups.items()},
    }


def report_paths(output: Path) -> tuple[Path, Path]:
    """``mined.jsonl.gz`` -> ``mined.report.json`` and ``mined.report.png`` beside it."""
    output = Path(output)
    stem = output.name.removesuffix(".gz").removesuffix(".jsonl")
    return output.with_name(f"{stem}.report.json"), output.with_name(f"{stem}.report.png")


def pairs_path(output: Path) -> Path:
    """``mined.jsonl.gz`` -> ``mined.pairs.jsonl.gz`` beside it: the rows kept without a negative."""
    output = Path(output)
    stem = output.name.removesuffix(".gz").removesuffix(".jsonl")
    return output.with_name(f"{stem}.pairs{output.name.removeprefix(stem)}")


def plot_histograms(report: MiningReport, path: Path, *, atomic: bool = True) -> Path:
    """Score histograms (positives, chosen negatives, removed candidates by rule) as a PNG."""
    from embedtune.plots import figure, save_png

    edges = np.array(report.histograms["edges"])
    with figure(figsize=(8, 4.5), dpi=110) as (fig, ax):
        for name, counts in report.histograms["counts"].items():
            style = {"linestyle": "--", "linewidth": 2.5} if name == "positive" else {"linewidth": 1.5}
            ax.stairs(counts, edges, label=f"{name} ({sum(counts)})", **style)
        ax.set_yscale("symlog")
        ax.set_xlabel(f"{report.retriever} score")
        ax.set_ylabel("count")
        low, high = report.window
        ax.set_title(f"mining: {report.rows_written} of {report.pairs} rows kept, ranks {low}..{high}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return save_png(fig, path, atomic=atomic)
