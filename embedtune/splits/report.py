"""What a split or a conversion did: queries and qrels per split, and what was kept together.

One record for the command's text summary, its ``--json`` output and the ``split.json`` written into
the new folder, so the three always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embedtune.splits.assign import Assignment, SplitSettings

SCHEMA = 1  # version of to_dict()'s layout; raised when a key changes meaning or goes away


@dataclass
class SplitReport:
    """The result of :func:`~embedtune.splits.split_beir` or :func:`~embedtune.splits.pairs_to_beir`."""

    input: Path
    output: Path
    source: str  # "beir" (a BEIR folder) or "pairs" (a pairs file)
    documents: int
    splits: dict[str, dict[str, int]]  # split -> {"queries": n, "qrels": n}
    pooled_from: list[str] = field(default_factory=list)  # the BEIR qrels splits read
    pairs: int | None = None  # rows of a pairs file
    settings: SplitSettings | None = None  # None: converted without splitting
    assignment: Assignment | None = None

    @property
    def queries(self) -> int:
        return sum(s["queries"] for s in self.splits.values())

    def to_dict(self) -> dict:
        out: dict = {
            "schema": SCHEMA,
            "input": str(self.input),
            "output": str(self.output),
            "source": self.source,
            "documents": self.documents,
            "queries": self.queries,
            "splits": self.splits,
        }
        if self.pooled_from:
            out["pooled_from"] = self.pooled_from
        if self.pairs is not None:
            out["pairs"] = self.pairs
        if self.settings is not None:
            s = self.settings
            out["settings"] = {"ratios": list(s.ratios), "seed": s.seed, "group_documents": s.group_documents}
            if s.source_split is not None:
                out["settings"]["source_split"] = s.source_split
        if self.assignment is not None:
            out["grouping"] = self.assignment.to_dict()
        return out

    def summary(self) -> str:
        """A few lines for people: sizes per split, then what was kept together and what could not be."""
        what = f"pairs file, {self.pairs:,} pairs" if self.source == "pairs" else "BEIR folder"
        if self.pooled_from:
            what += f", qrels {'+'.join(self.pooled_from)}"
        lines = [f"{self.input} ({what}) -> {self.output}: {self.queries:,} queries, {self.documents:,} documents"]
        for name, sizes in self.splits.items():
            share = f" ({sizes['queries'] / self.queries:.1%})" if len(self.splits) > 1 else ""
            lines.append(f"  {name}: {_count(sizes['queries'], 'query', 'queries')}{share}, {sizes['qrels']:,} qrels")
        a = self.assignment
        if a is not None:
            lines.append(
                f"kept together: {a.groups_kept_together:,} groups of 2+ queries ({a.queries_kept_together:,} "
                f"queries; {a.duplicate_queries:,} share their text with another), largest {a.largest_group}; "
                + (
                    f"groups grow through shared documents up to {a.group_cap:,} queries"
                    if self.settings is None or self.settings.group_documents
                    else "shared documents not grouped"
                )
            )
            lines.append(f"documents relevant to queries on two sides: {a.documents_across_splits:,}")
        return "\n".join(lines)


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"
