"""The multi-line fallback reply, made safe for libmilter's smfi_setmlreply."""
from __future__ import annotations

import re
import textwrap

from .model import Reply

MAX_LINES = 32          # libmilter's limit for a multi-line reply
MAX_LINE_TEXT = 240     # at most 480 once every "%" is doubled; SMTP allows 512 per line


_LINE_BREAKS = re.compile(r"[\r\n\t]+")
_NOT_PRINTABLE_ASCII = re.compile(r"[^ -~]")


def sanitize_line(text: str) -> str:
    """One reply line: printable ASCII only, '%' doubled for libmilter."""
    text = _LINE_BREAKS.sub(" ", text)
    if not (text.isascii() and text.isprintable()):      # else nothing to replace
        text = _NOT_PRINTABLE_ASCII.sub("?", text)
    return text.replace("%", "%%")


def _wrap(text: str, width: int) -> list:
    """textwrap.wrap's lines (long words broken, not hyphens), or [""] for none."""
    # The usual text, printable ASCII words no longer than a line between single
    # spaces, is packed greedily, as textwrap does, without its chunking machinery
    # (and a line that fits is given back as it is).
    if text.isascii() and text.isprintable() and text.strip(" ") == text:
        if len(text) <= width:
            return [text]
        words = text.split(" ")
        if "  " not in text and max(map(len, words)) <= width:
            lines, line = [], words[0]
            for word in words[1:]:
                if len(line) + 1 + len(word) <= width:
                    line += " " + word
                else:
                    lines.append(line)
                    line = word
            return lines + [line]
    return textwrap.wrap(text, width=width, break_long_words=True, break_on_hyphens=False) or [""]


def build_reply(code: str, status: str, sentence: str, auth_results: str = "",
                registration_url: str = "") -> Reply:
    """The reply: a human sentence, the would-be Authentication-Results, the URL.

    Lines are wrapped before '%' is doubled, so a doubled '%' never splits.
    """
    raw_lines = _wrap(sentence, MAX_LINE_TEXT)
    if auth_results:
        raw_lines += _wrap("Authentication-Results: " + auth_results, MAX_LINE_TEXT)
    if registration_url:
        raw_lines += _wrap("To be accepted over IPv6: " + registration_url, MAX_LINE_TEXT)
    if len(raw_lines) > MAX_LINES:
        raw_lines = raw_lines[:MAX_LINES - 1] + ["(further lines omitted)"]
    return Reply(code=code, status=status, lines=tuple(sanitize_line(line) for line in raw_lines))
