"""BM25: Lucene's formula on a hand-checkable corpus, stemming, stop words, and the edges of search."""

from __future__ import annotations

import math

import pytest
from helpers import CORPUS

from embedtune.errors import EmbedtuneError
from embedtune.retrieval.bm25 import BM25

DOCS = {
    "d1": "server server proxy",
    "d2": "editor for text",
    "d3": "web server",
    "d4": "database server software",
}


def lucene_bm25(query_terms, doc_terms: dict[str, list[str]], k1=1.2, b=0.75) -> dict[str, float]:
    """Lucene (>= 8) BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)) times tf / (tf + k1 * length norm)."""
    n = len(doc_terms)
    avgdl = sum(len(t) for t in doc_terms.values()) / n
    scores = {}
    for doc, terms in doc_terms.items():
        score = 0.0
        for term in query_terms:
            tf, df = terms.count(term), sum(term in t for t in doc_terms.values())
            if tf:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                score += idf * tf / (tf + k1 * (1 - b + b * len(terms) / avgdl))
        if score:
            scores[doc] = score
    return scores


def test_scores_follow_lucene_bm25():
    # After stop words ("for") and stemming ("software" -> "softwar"), the documents are these terms:
    terms = {
        "d1": ["server", "server", "proxi"],
        "d2": ["editor", "text"],
        "d3": ["web", "server"],
        "d4": ["databas", "server", "softwar"],
    }
    hits = BM25(DOCS).search(["web server"], k=10)[0]
    expected = lucene_bm25(["web", "server"], terms)
    assert [d for d, _ in hits] == sorted(expected, key=expected.get, reverse=True)
    for doc, score in hits:
        assert score == pytest.approx(expected[doc], rel=1e-5)
    assert "d2" not in dict(hits)  # shares no term: not returned


def test_stemming_stop_words_and_unknown_terms():
    bm25 = BM25(CORPUS)
    hits = bm25.search(["compressing files", "the of and", "zzzqx", "Editors"], k=3)
    assert hits[0][0][0] == "gzip"  # "compressing" ~ "compresses"
    assert hits[1] == [] and hits[2] == []  # nothing matchable: no results, not arbitrary ones
    assert hits[3][0][0] == "vim"
    assert len(bm25.search(["server"], k=100)[0]) <= len(CORPUS)


def test_bad_input():
    with pytest.raises(EmbedtuneError, match="at least one document"):
        BM25({})
    with pytest.raises(EmbedtuneError, match="positive"):
        BM25(DOCS).search(["web"], k=0)
