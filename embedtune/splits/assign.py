"""Which split each query goes to: whole groups of related queries, seeded, in the asked proportions.

Three leaks of a naive random split of qrels rows are designed out:

* **A query on two sides.** Queries, not qrels rows, are assigned: a query takes all its relevant
  documents with it.
* **The same question twice.** Queries whose texts are equal once case, spacing and punctuation are
  ignored (:func:`duplicate_key`) always stay together, whatever it costs the proportions: a test
  query seen in training measures memory, not retrieval.
* **The same answer twice.** Queries that share a relevant document (or documents with equal
  normalised texts) are joined too, as far as the proportions allow: a group grows through shared
  documents only while it stays within half the smallest split's target (rounded up), so every split can still
  be filled to its share. Documents whose queries had to be separated are counted
  (:attr:`Assignment.documents_across_splits`), never hidden.

Groups are placed largest first (seeded order among equal sizes) into the split furthest below its
target that can take them whole, so with enough small groups every split lands on its target. The
targets are the ratios times the number of queries, rounded by largest remainder; a split whose
target rounds to no query is refused, naming the split and the counts.
"""

from __future__ import annotations

import math
import random
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from embedtune.data import SPLITS
from embedtune.errors import EmbedtuneError
from embedtune.settings import SettingError, setting, validate


@dataclass(frozen=True)
class SplitSettings:
    """How queries are split into train/dev/test qrels (see the module docstring for the rules)."""

    ratios: tuple[float, ...] = setting(
        (0.7, 0.2, 0.1),
        help="Shares of the queries for train, dev and test (two values: train and dev); they must sum to 1. "
        "A share of 0 leaves that split out.",
        min=0,
    )
    seed: int = setting(42, help="Seed of the assignment: the same input and seed give the same splits.", min=0)
    source_split: str | None = setting(
        None, help="The qrels split of a BEIR folder to split (default: every qrels/*.tsv, pooled)."
    )
    group_documents: bool = setting(
        True,
        help="Keep queries that share a relevant document on one side, as far as the ratios allow "
        "(near-duplicate query texts are always kept together).",
    )

    def __post_init__(self) -> None:
        validate(self)
        if not 2 <= len(self.ratios) <= len(SPLITS):
            raise SettingError("ratios", f"expected 2 or 3 values (train, dev[, test]), got {len(self.ratios)}")
        total = math.fsum(self.ratios)
        if abs(total - 1) > 1e-6:
            shown = " + ".join(f"{r:g}" for r in self.ratios)
            raise SettingError("ratios", f"must sum to 1, got {total:g} ({shown})")
        if self.source_split is not None and not self.source_split.strip():
            raise SettingError("source_split", "empty split name")

    @property
    def shares(self) -> dict[str, float]:
        """``{split: ratio}`` for the splits with a share above 0, in train, dev, test order."""
        return {name: r for name, r in zip(SPLITS, self.ratios, strict=False) if r > 0}


def duplicate_key(text: str) -> str:
    """``text`` with case, spacing and punctuation ignored (and Unicode compatibility forms folded)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(" " if unicodedata.category(c).startswith("P") else c for c in folded).split())


def split_targets(n_queries: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Queries per split: ``n * ratio`` rounded by largest remainder (they sum to ``n``); a split that
    would hold no query is an error naming the split and the counts."""
    if n_queries == 0:
        raise EmbedtuneError("no queries to split")
    exact = {name: n_queries * r / math.fsum(shares.values()) for name, r in shares.items()}
    targets = {name: math.floor(x) for name, x in exact.items()}
    order = sorted(exact, key=lambda name: (-(exact[name] - targets[name]), list(exact).index(name)))
    for name in order[: n_queries - sum(targets.values())]:
        targets[name] += 1
    for name, target in targets.items():
        if target == 0:
            counts = ", ".join(f"{s} {t}" for s, t in targets.items())
            raise EmbedtuneError(
                f"split '{name}' (ratio {shares[name]:g}) would hold no query: {n_queries} queries give {counts}; "
                f"give at least {math.ceil(1 / shares[name])} queries or set its ratio to 0"
            )
    return targets


class _Groups:
    """Union-find over query positions with group sizes (path halving, union by size)."""

    def __init__(self, n: int) -> None:
        self.parent, self.size = list(range(n)), [1] * n

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int, cap: int | None = None) -> bool:
        """Join the groups of ``a`` and ``b`` unless the result would exceed ``cap``; True when joined."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if cap is not None and self.size[ra] + self.size[rb] > cap:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb], self.size[ra] = ra, self.size[ra] + self.size[rb]
        return True


@dataclass
class Assignment:
    """Each query's split, and what was kept together to get there."""

    split_of: dict[str, str]  # query id -> split, in the input's query order
    targets: dict[str, int]
    groups: int  # groups placed (a query on its own is a group of one)
    groups_kept_together: int  # groups of two or more queries
    queries_kept_together: int  # queries in those groups
    duplicate_queries: int  # queries whose normalised text another query has too
    largest_group: int
    group_cap: int  # the largest a group may grow through shared documents
    documents_across_splits: int  # documents (by normalised text) relevant to queries on two sides
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "targets": self.targets,
            "groups": self.groups,
            "groups_kept_together": self.groups_kept_together,
            "queries_kept_together": self.queries_kept_together,
            "duplicate_queries": self.duplicate_queries,
            "largest_group": self.largest_group,
            "group_cap": self.group_cap,
            "documents_across_splits": self.documents_across_splits,
        }


def _group(
    query_ids: Sequence[str],
    query_keys: Sequence[str],
    query_docs: Sequence[Sequence[str]],
    cap: int,
    by_document: bool,
) -> _Groups:
    """Join equal query keys unconditionally, then queries sharing a document key within ``cap``."""
    groups = _Groups(len(query_ids))
    first: dict[str, int] = {}
    for i, key in enumerate(query_keys):
        groups.union(first.setdefault(key, i), i)
    if by_document:
        linked: dict[str, list[int]] = {}
        for i, docs in enumerate(query_docs):
            for doc in dict.fromkeys(docs):
                linked.setdefault(doc, []).append(i)
        # Documents with few queries first: a hub document is the link the cap should cut, not a rare one.
        for doc in sorted(linked, key=lambda d: (len(linked[d]), d)):
            for i in linked[doc][1:]:
                groups.union(linked[doc][0], i, cap)
    return groups


def assign_queries(
    query_texts: Mapping[str, str],
    query_docs: Mapping[str, Sequence[str]],
    settings: SplitSettings,
) -> Assignment:
    """Assign every query of ``query_docs`` (id -> the normalised keys of its relevant documents) to a split.

    ``query_texts`` gives each query's text (for near-duplicates). Deterministic for a given input
    order and ``settings.seed``: nothing depends on set or hash order.
    """
    ids = list(query_docs)
    shares = settings.shares
    targets = split_targets(len(ids), shares)
    cap = max(1, math.ceil(min(targets.values()) / 2))
    keys = [duplicate_key(query_texts[q]) for q in ids]
    docs = [query_docs[q] for q in ids]
    groups = _group(ids, keys, docs, cap, settings.group_documents)
    members: dict[int, list[int]] = {}
    for i in range(len(ids)):
        members.setdefault(groups.find(i), []).append(i)
    ordered = list(members.values())
    random.Random(settings.seed).shuffle(ordered)
    ordered.sort(key=len, reverse=True)  # stable: the seeded order stays among groups of one size
    counts = dict.fromkeys(targets, 0)
    split_of_index: dict[int, str] = {}
    for group in ordered:
        deficit = {name: targets[name] - counts[name] for name in targets}
        fitting = [name for name in targets if deficit[name] >= len(group)] or list(targets)
        chosen = max(fitting, key=lambda name: deficit[name])  # ties: the earlier split
        counts[chosen] += len(group)
        split_of_index.update(dict.fromkeys(group, chosen))
    _refuse_empty(counts, targets, ordered)
    key_counts: dict[str, int] = {}
    for key in keys:
        key_counts[key] = key_counts.get(key, 0) + 1
    sides: dict[str, set[str]] = {}
    for i, doc_keys in enumerate(docs):
        for doc in doc_keys:
            sides.setdefault(doc, set()).add(split_of_index[i])
    together = [g for g in ordered if len(g) > 1]
    return Assignment(
        split_of={q: split_of_index[i] for i, q in enumerate(ids)},
        targets=targets,
        groups=len(ordered),
        groups_kept_together=len(together),
        queries_kept_together=sum(map(len, together)),
        duplicate_queries=sum(1 for key in keys if key_counts[key] > 1),
        largest_group=len(ordered[0]),
        group_cap=cap,
        documents_across_splits=sum(1 for s in sides.values() if len(s) > 1),
        counts=counts,
    )


def _refuse_empty(counts: dict[str, int], targets: dict[str, int], ordered: list[list[int]]) -> None:
    """A split left empty because groups that must stay whole (equal texts) are too big to spread."""
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        got = ", ".join(f"{s} {n}" for s, n in counts.items())
        raise EmbedtuneError(
            f"split '{empty[0]}' got no query: {sum(counts.values())} queries in {len(ordered)} groups that must "
            f"stay whole (the largest: {len(ordered[0])}; equal query texts are never split) gave {got}; "
            f"targets were {', '.join(f'{s} {t}' for s, t in targets.items())}"
        )
