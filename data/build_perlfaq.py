"""Build ``data/perlfaq``, a small question -> answer retrieval set, from the perlfaq pods Debian ships.

Why: ``data/debian`` is one corpus of one style (synopsis -> package description). This set checks
whether training defaults carry over to another regime: natural-language *questions* whose relevant
document is a long, code-heavy answer. The source is ``perlfaq1.pod`` .. ``perlfaq9.pod`` from
Debian's ``perl-doc`` package (``/usr/share/perl/<version>/pod``).

Reproducible byte for byte (standard library only, sorted iteration, hash-based split, gzip with a
zero timestamp). Run from the repository root::

    python data/build_perlfaq.py                       # finds /usr/share/perl/*/pod
    python data/build_perlfaq.py /usr/share/perl/5.36.0/pod

Design (see data/README.md for the why):

* query = one ``=head2`` heading (the FAQ's question), rendered to plain text;
* document = the text under that heading up to the next heading: ordinary paragraphs reflowed to
  one line each, formatting codes resolved (``L<perlop/"x">`` -> ``"x" in perlop``, index entries
  ``X<>`` dropped), list items as ``- item``, verbatim (code) paragraphs kept with their indentation;
* query and document share an id (``perlfaq4.q012``: file and position of the question), each query
  has exactly one relevant document, and every document answers one query (no distractors: the
  FAQ has no other prose worth retrieving);
* split per question by SHA-256 of ``file + question``: the questions ranked by that hash, the first
  ``TEST_FRACTION`` of them are test, the rest train. Grouping by file (nine files) or by ``=head1``
  part (fourteen) is too coarse for a ~300-question set, so related questions of one file can sit on
  both sides. There is deliberately no dev split.
"""

from __future__ import annotations

import argparse
import html.entities
import json
import re
import sys
from pathlib import Path

from beir_write import hash_unit, write_dataset  # beside this script

FAQ_FILES = tuple(f"perlfaq{n}.pod" for n in range(1, 10))
TEST_FRACTION = 0.27
SPLIT_SALT = "embedtune-perlfaq-v1"
_POD_GLOB = "/usr/share/perl/*/pod"
_ESCAPES = {"lt": "<", "gt": ">", "sol": "/", "verbar": "|"}
_CODE_START = re.compile(r"([A-Z])(<+)")


def default_pod_dir() -> Path | None:
    """The newest ``/usr/share/perl/<version>/pod`` holding ``perlfaq1.pod`` (perl-doc), if any."""
    candidates = sorted(p for p in Path("/").glob(_POD_GLOB.lstrip("/")) if (p / FAQ_FILES[0]).is_file())
    return candidates[-1] if candidates else None


def _escape(name: str) -> str:
    """``E<...>``: a named or numeric character."""
    if name in _ESCAPES:
        return _ESCAPES[name]
    if name.lower().startswith("0x"):
        return chr(int(name, 16))
    if name.isdigit():
        return chr(int(name))
    if name in html.entities.name2codepoint:
        return chr(html.entities.name2codepoint[name])
    return name


def _split_link(raw: str) -> tuple[str | None, str]:
    """``L<text|target>`` -> (raw text, raw target); a ``|`` inside a nested code does not count."""
    depth = 0
    for i, ch in enumerate(raw):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "|" and depth == 0:
            return raw[:i], raw[i + 1 :]
    return None, raw


def _link(raw: str) -> str:
    """Render ``L<...>`` the way ``perldoc -T`` does: its text, a URL, or ``"section" in page``."""
    text, target = _split_link(raw)
    if text is not None:
        return render_inline(text)
    target = target.strip()
    if re.match(r"^\w+:[^:\s]\S*$", target):  # http://..., mailto:...
        return target
    page, slash, section = target.partition("/")
    if not slash:  # L<page>, or L<"section"> of this page
        return render_inline(page)
    section = render_inline(section.strip())
    if not section.startswith('"'):
        section = f'"{section}"'
    return f"{section} in {render_inline(page)}" if page else section


def _parse(s: str, pos: int, closer: re.Pattern[str] | None) -> tuple[str, int]:
    """Render ``s`` from ``pos`` until ``closer`` matches (or the end); return (text, position after it)."""
    out: list[str] = []
    while pos < len(s):
        if closer is not None:
            m = closer.match(s, pos)
            if m:
                return "".join(out), m.end()
        m = _CODE_START.match(s, pos)
        if not m:
            out.append(s[pos])
            pos += 1
            continue
        code, angles = m.group(1), len(m.group(2))
        if angles == 1:
            inner_closer = re.compile(">")
            start = m.end()
        else:  # C<< ... >>: whitespace after the opener and before the closer is part of the syntax
            inner_closer = re.compile(r"\s+" + ">" * angles)
            start = m.end()
            while start < len(s) and s[start].isspace():
                start += 1
        text, end = _parse(s, start, inner_closer)
        raw = s[start:end]
        raw = raw[: len(raw) - angles].rstrip() if angles > 1 else raw[:-1]
        if code in "XZ":
            pass  # index entries, zero-width marks
        elif code == "E":
            out.append(_escape(raw))
        elif code == "L":
            out.append(_link(raw))
        else:  # B, C, F, I, S: the text itself
            out.append(text)
        pos = end
    if closer is not None:
        raise ValueError(f"unterminated formatting code in {s!r}")
    return "".join(out), pos


def render_inline(text: str) -> str:
    """Plain text of one pod paragraph's formatting codes, whitespace collapsed (``X<>`` leaves gaps)."""
    return " ".join(_parse(" ".join(text.split()), 0, None)[0].split())


def paragraphs(lines: list[str]) -> list[str]:
    """Split pod lines into paragraphs at blank (or whitespace-only) lines."""
    out: list[str] = []
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line.rstrip().expandtabs(8))
        elif current:
            out.append("\n".join(current))
            current = []
    if current:
        out.append("\n".join(current))
    return out


def render_body(paras: list[str]) -> str:
    """Plain text of an answer: reflowed prose, ``- `` list items, verbatim blocks as they are."""
    blocks: list[str] = []
    depth = 0  # =over nesting
    bullet = ""  # "- " waiting for the paragraph after a bare "=item *"
    item_run = False  # the last block is a run of one-line "=item label" entries
    for para in paras:
        if not para.startswith("="):
            if para[0].isspace():  # verbatim: code, kept as is
                blocks.append(para)
            else:
                blocks.append(bullet + render_inline(para))
            bullet, item_run = "", False
            continue
        command, *rest = para.split(None, 1)
        if command == "=over":
            depth += 1
        elif command == "=back":
            depth = max(depth - 1, 0)
        elif command == "=item":
            indent = "  " * max(depth - 1, 0)
            label = rest[0].removeprefix("*").strip() if rest else ""
            if not label:
                bullet = f"{indent}- "
                continue
            item = f"{indent}- {render_inline(label)}"
            if item_run:
                blocks[-1] += "\n" + item
            else:
                blocks.append(item)
            item_run = True
            continue
        elif command.startswith("=head"):
            blocks.append(render_inline(rest[0] if rest else ""))
        elif command not in ("=for", "=begin", "=end", "=pod", "=cut", "=encoding"):
            raise ValueError(f"unexpected pod command {command!r}")
        item_run = False
    return "\n\n".join(blocks)


def read_faq(path: Path) -> list[tuple[str, str, str]]:
    """``(part, question, answer)`` for every ``=head2`` of one perlfaq file.

    ``part`` is the ``=head1`` above the question ("Data: Strings"), or the file's title from its NAME
    ("Programming Tools") where the questions sit under DESCRIPTION.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    paras = paragraphs(lines)
    entries: list[tuple[str, str, str]] = []
    part = ""
    question: str | None = None
    body: list[str] = []
    chapter = ""

    def flush() -> None:
        if question is not None:
            entries.append((chapter if part == "DESCRIPTION" else part, question, render_body(body)))

    for para in paras:
        if para.startswith(("=head1", "=head2")):
            flush()
            question, body = None, []
            heading = render_inline(para.split(None, 1)[1])
            if para.startswith("=head1"):
                part = heading
            else:
                question = heading
        elif part == "NAME":  # "perlfaq4 - Data Manipulation": the chapter, for files without parts
            chapter = render_inline(para).partition(" - ")[2]
        elif question is not None:
            body.append(para)
    flush()
    return entries


def build(pod_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write corpus, queries and ``qrels/{train,test}.tsv`` to ``out_dir`` (replaced whole); return counts."""
    corpus: list[dict] = []
    keys: dict[str, str] = {}
    questions: dict[str, str] = {}
    empty = 0
    for name in FAQ_FILES:
        stem = name.removesuffix(".pod")
        for n, (part, question, answer) in enumerate(read_faq(pod_dir / name), start=1):
            if not answer.strip():
                empty += 1
                continue
            doc_id = f"{stem}.q{n:03d}"
            corpus.append({"_id": doc_id, "title": "", "text": answer, "metadata": {"file": name, "part": part}})
            keys[doc_id] = f"{name}:{question}"
            questions[doc_id] = question
    if len(set(questions.values())) != len(questions):
        raise ValueError("two perlfaq questions have the same text")

    ranked = sorted(keys, key=lambda q: (hash_unit(SPLIT_SALT, keys[q]), q))
    test = set(ranked[: round(TEST_FRACTION * len(ranked))])
    split_of = {q: "test" if q in test else "train" for q in keys}
    queries = [{"_id": q, "text": questions[q], "metadata": {"split": split_of[q]}} for q in sorted(keys)]
    qrels = {split: [q for q in sorted(keys) if split_of[q] == split] for split in ("train", "test")}

    write_dataset(out_dir, corpus, queries, qrels)

    return {
        "documents": len(corpus),
        "queries": len(queries),
        "dropped_empty_answers": empty,
        "train_queries": sum(1 for s in split_of.values() if s == "train"),
        "test_queries": len(test),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "pod_dir",
        type=Path,
        nargs="?",
        default=default_pod_dir(),
        help=f"folder with perlfaq1.pod .. perlfaq9.pod (default: newest {_POD_GLOB}; apt-get install perl-doc)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "perlfaq")
    args = parser.parse_args(argv)
    if args.pod_dir is None:
        parser.error(f"no perlfaq pods under {_POD_GLOB}: install Debian's perl-doc or give the folder")
    json.dump(build(args.pod_dir, args.out), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
