"""Build ``data/python-docs``, a section title -> section text retrieval set, from Debian's Python manual.

Why: ``data/debian`` pairs a one-line synopsis with a short description. This set checks whether
training defaults carry over to a manual: a short, specific section *title* as the query and the
section's own text, often long and full of code and API signatures, as the document. The source is
the HTML documentation of Debian's ``python3.11-doc`` package (``/usr/share/doc/python3.11/html``),
parsed with the standard library's ``html.parser``.

Reproducible byte for byte (standard library only, sorted iteration, hash-based split, gzip with a
zero timestamp). Run from the repository root::

    python data/build_python_docs.py                   # /usr/share/doc/python3.11/html
    python data/build_python_docs.py /usr/share/doc/python3.11/html

Design (see data/README.md for the why):

* pages: every ``*.html`` of the parts in ``PARTS`` (library reference, language reference, HOWTOs,
  tutorial, setup and usage, extending and embedding, C API); the FAQ (another question -> answer
  set, like ``data/perlfaq``) and "What's New" (release notes) are left out;
* document = one ``<section>``'s own text: everything under its heading up to its first subsection
  (subsections are documents of their own, so no document contains another). Prose is reflowed,
  code blocks (``<pre>``) keep their lines, indented by four spaces, list items become ``- item``,
  table rows ``cell | cell``; navigation, table-of-contents trees, pilcrow links and heading numbers are dropped.
  Sections with fewer than ``MIN_DOC_WORDS`` words of their own are not documents;
* query = the section's title, kept only where it names one section: titles occurring more than
  once across all parsed sections (case and spacing ignored: "Examples", "Basic Usage", "Exceptions")
  titles made only of generic words (``GENERIC_WORDS``: "Module contents", "Other functions") and
  one-word titles that are not identifiers ("Windows", "Lock") give no query; their sections stay in
  the corpus as distractors. A query's one relevant document is its section, whose id it shares
  (``library/re.html#raw-string-notation``); its document must have at least ``MIN_QUERY_DOC_WORDS``
  words;
* split by page family, so related pages do not straddle train and test: SHA-256 of the part and the
  page name up to its first ``.``, ``-`` or ``_`` (``library/asyncio-task`` and
  ``library/asyncio-stream`` are the family ``library/asyncio``, ``library/os.path`` sits with
  ``library/os``); a family goes to test when that hash falls under ``TEST_FRACTION``. There is
  deliberately no dev split.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from beir_write import hash_unit, write_dataset  # beside this script

DEFAULT_SOURCE = Path("/usr/share/doc/python3.11/html")
PARTS = ("library", "reference", "howto", "tutorial", "using", "extending", "c-api")
TEST_FRACTION = 0.22
SPLIT_SALT = "embedtune-python-docs-v1"
MIN_DOC_WORDS = 5
MIN_QUERY_DOC_WORDS = 20
# A title made only of these words (after lower-casing; punctuation ignored) is not specific.
# (These word lists read better as text than as one-string-per-line literals, hence the noqa.)
GENERIC_WORDS = frozenset(
    """a additional advanced an and api attributes basic basics built c class classes command
    common concepts constants content contents data definitions deprecated details example examples
    exceptions features for function functions general helper helpers in interface introduction
    line low level methods misc miscellaneous module modules more notes object objects of on options
    other overview public reference related see simple summary supported the tips to types usage
    use using utilities utility with""".split()  # noqa: SIM905
)
_BLOCK = frozenset(
    "address article aside blockquote caption dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 "  # noqa: SIM905
    "header hr li ol p pre section table tbody tfoot thead tr ul".split()
)
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())  # noqa: SIM905
# Pilcrow links, table-of-contents trees, code line numbers, and the "8.6.4." numbering of headings.
_SKIPPED_CLASSES = frozenset({"headerlink", "toctree-wrapper", "linenos", "section-number"})
_HEADING = re.compile(r"h[1-6]")
_WORD = re.compile(r"[^\W_]+")
_FAMILY_END = re.compile(r"[.\-_]")
_IDENTIFIER = re.compile(r"[a-z][A-Z]|\d|_")  # camelCase, a digit or an underscore


@dataclass
class Section:
    """One ``<section>`` of a page: its anchor, title and own text (subsections excluded)."""

    page: str
    anchor: str
    title: str = ""
    blocks: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(self.blocks)


class _PageParser(HTMLParser):
    """Collect every ``<section>`` of a Sphinx page with its heading and own text, in page order."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.sections: list[Section] = []
        self._open: list[Section] = []  # innermost last
        self._tags: list[tuple[str, bool]] = []  # open elements: (tag, starts a skipped subtree)
        self._skip = 0  # depth of skipped subtrees we are in
        self._pre = 0
        self._cell = 0  # depth of table cells we are in
        self._heading: list[str] | None = None  # text of the heading being read
        self._inline: list[str] = []  # text of the block being read
        self._prefix = ""  # "- " for a list item, set when its first text arrives

    # -- text collection -------------------------------------------------------------------------
    def _flush(self) -> None:
        if not self._open:
            self._inline, self._prefix = [], ""
            return
        raw = "".join(self._inline)
        self._inline = []
        if self._pre:
            return
        text = " ".join(raw.split())
        if text:
            self._open[-1].blocks.append(self._prefix + text)
            self._prefix = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        classes = set((attr.get("class") or "").split())
        skip = tag == "nav" or bool(classes & _SKIPPED_CLASSES)
        if tag not in _VOID:
            self._tags.append((tag, skip))
        if skip:
            self._skip += 1
        if self._skip:
            return
        if tag == "br":
            self._inline.append("\n" if self._pre else " ")
            return
        if tag in _BLOCK:
            if self._cell:  # a paragraph inside a table cell: the row stays one line
                self._inline.append(" ")
            else:
                self._flush()
        if tag == "section":
            section = Section(self.page, attr.get("id") or "")
            self.sections.append(section)
            self._open.append(section)
        elif _HEADING.fullmatch(tag) and self._open and not self._open[-1].title and self._heading is None:
            self._heading = []
        elif tag == "pre":
            self._pre += 1
        elif tag == "li":
            self._prefix = "- "
        elif tag in ("td", "th"):
            self._cell += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        # Close up to the matching open element (Sphinx output is well formed; be lenient anyway).
        while self._tags:
            open_tag, skip = self._tags.pop()
            self._close(open_tag, skip)
            if open_tag == tag:
                break

    def _close(self, tag: str, skip: bool) -> None:
        if skip:
            self._skip -= 1
            return
        if self._skip:
            return
        if self._heading is not None and _HEADING.fullmatch(tag):
            self._open[-1].title = " ".join("".join(self._heading).split())
            self._heading = None
            self._inline = []
            return
        if tag == "pre":
            self._pre -= 1
            code = "".join(self._inline).strip("\n")
            self._inline = []
            if code.strip() and self._open:
                lines = [("    " + line).rstrip() for line in code.expandtabs(8).splitlines()]
                self._open[-1].blocks.append("\n".join(lines))
            return
        if tag in ("td", "th"):
            self._cell -= 1
            self._inline.append(" |")
            return
        if tag in _BLOCK:
            if self._cell:
                self._inline.append(" ")
                return
            if tag == "tr":  # cells "a |", "b |" -> "a | b"
                self._inline = ["".join(self._inline).rstrip().removesuffix("|")]
            self._flush()
            if tag == "li":
                self._prefix = ""
        if tag == "section" and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._heading is not None:
            self._heading.append(data)
        else:
            self._inline.append(data)


def parse_page(path: Path, page: str) -> list[Section]:
    """The sections of one HTML page, in page order."""
    parser = _PageParser(page)
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser.sections


def title_key(title: str) -> str:
    """Titles with the same key are the same title: case, spacing and trailing punctuation ignored."""
    return " ".join(title.lower().split()).rstrip(".:")


def is_generic(title: str) -> bool:
    """Whether ``title`` names no one section.

    True for titles made only of generic words ("Module contents", "Other functions") and for one-word
    titles that are ordinary words ("Windows", "Lock", "Theory", "nargs"), which could head a section
    of many pages; a one-word identifier stays ("ThreadPoolExecutor", "BLAKE2", "formatter_class").
    """
    words = _WORD.findall(title.lower())
    if all(w in GENERIC_WORDS for w in words):
        return True
    return len(title.split()) == 1 and not _IDENTIFIER.search(title)


def family(page: str) -> str:
    """``library/asyncio-task.html`` -> ``library/asyncio``: the split unit."""
    part, _, name = page.partition("/")
    stem = name.removesuffix(".html").lstrip("_")
    return f"{part}/{_FAMILY_END.split(stem)[0]}"


def _split_of(unit: str) -> str:
    return "test" if hash_unit(SPLIT_SALT, unit) < TEST_FRACTION else "train"


def read_sections(html_dir: Path) -> list[Section]:
    """Every section of every page of ``PARTS``, pages in sorted order."""
    sections: list[Section] = []
    for part in PARTS:
        for path in sorted((html_dir / part).glob("*.html")):
            sections.extend(parse_page(path, f"{part}/{path.name}"))
    return sections


def build(html_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write corpus, queries and ``qrels/{train,test}.tsv`` to ``out_dir`` (replaced whole); return counts."""
    sections = read_sections(html_dir)
    title_count = Counter(title_key(s.title) for s in sections)
    corpus: list[dict] = []
    queries: list[dict] = []
    qrels: dict[str, list[str]] = {"train": [], "test": []}
    seen: set[str] = set()
    dropped = Counter()
    for s in sections:
        doc_id = f"{s.page}#{s.anchor}"
        if doc_id in seen or not s.anchor:
            raise ValueError(f"section id {doc_id!r} is not unique")
        seen.add(doc_id)
        words = len(s.text.split())
        if words < MIN_DOC_WORDS:
            dropped["short_documents"] += 1
            continue
        corpus.append({"_id": doc_id, "title": "", "text": s.text, "metadata": {"page": s.page, "section": s.title}})
        if not s.title:
            dropped["no_title"] += 1
        elif title_count[title_key(s.title)] > 1:
            dropped["shared_titles"] += 1
        elif is_generic(s.title):
            dropped["generic_titles"] += 1
        elif words < MIN_QUERY_DOC_WORDS:
            dropped["short_answers"] += 1
        else:
            split = _split_of(family(s.page))
            queries.append({"_id": doc_id, "text": s.title, "metadata": {"page": s.page, "split": split}})
            qrels[split].append(doc_id)

    write_dataset(out_dir, corpus, queries, qrels)

    return {
        "pages": len({s.page for s in sections}),
        "sections": len(sections),
        "documents": len(corpus),
        "queries": len(queries),
        **{f"dropped_{k}": v for k, v in sorted(dropped.items())},
        "train_queries": len(qrels["train"]),
        "test_queries": len(qrels["test"]),
        "train_families": len({family(q["metadata"]["page"]) for q in queries if q["metadata"]["split"] == "train"}),
        "test_families": len({family(q["metadata"]["page"]) for q in queries if q["metadata"]["split"] == "test"}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "html_dir",
        type=Path,
        nargs="?",
        default=DEFAULT_SOURCE,
        help=f"the HTML documentation folder (default: {DEFAULT_SOURCE}; apt-get install python3.11-doc)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "python-docs")
    args = parser.parse_args(argv)
    if not (args.html_dir / "library").is_dir():
        parser.error(f"{args.html_dir} has no library/ folder: install Debian's python3.11-doc or give the folder")
    json.dump(build(args.html_dir, args.out), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
