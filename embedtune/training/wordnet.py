"""Synonyms from a WordNet database on disk, for query noise: nothing is downloaded, ever.

Debian's ``wordnet-base`` package installs the WordNet 3.0 database under ``/usr/share/wordnet``
(``index.<pos>`` and ``data.<pos>`` in the format of ``wndb(5WN)``). nltk's ``WordNetCorpusReader``
cannot read that folder as installed: it wants a ``lexnames`` file the package does not ship, and
its path sandbox refuses a folder outside ``nltk.data.path`` unless the process-wide list is
changed. The two files a synonym needs are plain text with a documented layout, so they are read
here directly: one pass over each index keeps only the words asked for, and each of their synsets
is read by its byte offset.

Only a word's most frequent sense per part of speech is used (the first synset an index line
lists): a rare sense ("a" as vitamin A) would replace a word with one that changes the query's
meaning. Words shorter than :data:`MIN_WORD` are never looked up, for the same reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from embedtune.errors import EmbedtuneError

ENV = "EMBEDTUNE_WORDNET"  # a WordNet database folder other than Debian's
DEFAULT_DIRS = (Path("/usr/share/wordnet"),)  # Debian/Ubuntu: apt-get install wordnet-base
PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")
MIN_WORD = 4
_MARKER = re.compile(r"\([a-z]+\)$")  # adjective position markers: "galore(ip)"


def find_wordnet() -> Path | None:
    """The WordNet database folder: ``$EMBEDTUNE_WORDNET`` when set, else Debian's; None when there is none."""
    candidates = [Path(os.environ[ENV])] if os.environ.get(ENV) else list(DEFAULT_DIRS)
    for root in candidates:
        if all((root / f"{kind}.{pos}").is_file() for pos in PARTS_OF_SPEECH for kind in ("index", "data")):
            return root
    return None


def synonyms(root: Path, words: Iterable[str]) -> dict[str, list[str]]:
    """``{word: [synonym, ...]}`` (lower case) for those of ``words`` that WordNet at ``root`` knows.

    Synonyms are the other lemmas of the word's most frequent sense in the first part of speech that
    has the word (nouns, verbs, adjectives, adverbs: queries are mostly noun phrases, and "game" the
    noun should not become "lame"); multi-word lemmas come with spaces (``put_in`` -> ``put in``).
    Inflected forms are not reduced to their lemma: "packages" is not looked up as "package".
    """
    wanted = {w.lower() for w in words if len(w) >= MIN_WORD and w.isalpha()}
    found: dict[str, list[str]] = {}
    for pos in PARTS_OF_SPEECH:
        offsets = _first_senses(root / f"index.{pos}", wanted - found.keys())  # the first part of speech wins
        if not offsets:
            continue
        data = root / f"data.{pos}"
        try:
            with data.open("rb") as f:
                for word, offset in offsets.items():
                    f.seek(offset)
                    lemmas = _lemmas(f.readline().decode("utf-8", errors="replace"))
                    found[word] = list(dict.fromkeys(s for s in lemmas if s != word))
        except (OSError, ValueError, IndexError) as e:
            raise EmbedtuneError(f"{data}: not a readable WordNet data file ({e})") from e
    return {word: found_words for word, found_words in found.items() if found_words}


def _first_senses(index: Path, wanted: set[str]) -> dict[str, int]:
    """The byte offset of each wanted lemma's first (most frequent) synset in an ``index.<pos>`` file."""
    offsets: dict[str, int] = {}
    try:
        with index.open("rb") as f:
            for raw in f:
                if raw.startswith(b"  "):  # the licence header
                    continue
                lemma, _, rest = raw.partition(b" ")
                word = lemma.decode("utf-8", errors="replace")
                if word in wanted:
                    # lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
                    fields = rest.split()
                    count = int(fields[1])
                    offsets[word] = int(fields[len(fields) - count])
    except (OSError, ValueError, IndexError) as e:
        raise EmbedtuneError(f"{index}: not a readable WordNet index file ({e})") from e
    return offsets


def _lemmas(line: str) -> list[str]:
    """The words of a ``data.<pos>`` line: ``offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] ...``."""
    fields = line.split()
    count = int(fields[3], 16)
    words = fields[4 : 4 + 2 * count : 2]
    return [_MARKER.sub("", w).replace("_", " ").lower() for w in words]
