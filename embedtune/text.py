"""Text as users give it and as terminals show it: what may be encoded, stored and printed.

Two failures are designed out here, once for every reader and printer:

* a lone UTF-16 surrogate (``"\\ud800"`` is valid JSON, and a command-line argument with invalid
  UTF-8 bytes arrives as one) cannot be encoded as UTF-8, so it would crash the document store's
  hash, pyarrow or the tokenizer far from the file and line it came from: :func:`check_text` reports
  it where the text is read;
* a query or document holding terminal escape sequences would, echoed raw, recolour, move or
  retitle the user's terminal: :func:`terminal_safe` shows every control character as an escape.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> int | None:
    """The 1-based position of the first lone surrogate in ``text`` (not encodable as UTF-8), else None."""
    match = _SURROGATE.search(text)
    return None if match is None else match.start() + 1


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be encoded or stored (empty, whitespace only, a lone surrogate), else None."""
    if not text.strip():
        return "empty"
    position = lone_surrogate(text)
    if position is not None:
        return (
            f"lone surrogate {text[position - 1].encode('unicode_escape').decode()} at character {position} "
            "(not valid Unicode text: invalid UTF-8 bytes, or a broken \\ud800-style JSON escape)"
        )
    return None


def terminal_safe(text: str) -> str:
    """``text`` with every control, format or unpaired-surrogate character shown as a Python escape.

    Printable characters of every script pass unchanged; ESC, BEL, backspace, carriage return,
    newlines, bidirectional overrides and the like become ``\\x1b``, ``\\u202e``... so printing the
    result can never drive the terminal.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
