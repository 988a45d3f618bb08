"""DKIM relaxed body canonicalisation (RFC 6376 3.4.4) in slices, for dkimpy.

dkimpy canonicalises a relaxed body with two ``re.sub`` calls over the whole
body. ``re.sub`` first builds a list of every piece between matches, and
every space of ordinary prose is a match: measured on a 2 MB text body the
list peaks at 34 times the body's size (two bytes objects per word, about 35
bytes each). Here the same substitutions run over slices of about ``SLICE``
bytes cut just after a CRLF (neither pattern can match across one), so that
list never holds more than one slice. The result is byte for byte dkimpy's
(tests/test_memory_budget.py compares them).

Installed once, on import of evidence.auth, as dkimpy's Relaxed.canonicalize_body.
"""
from __future__ import annotations

import re

from dkim import canonicalization

SLICE = 64 << 10
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")      # dkimpy's strip_trailing_whitespace
_WSP_RUN = re.compile(rb"[\t ]+")               # dkimpy's compress_whitespace


def relaxed_body(body: bytes) -> bytes:
    pieces = []
    start = 0
    while start < len(body):
        end = body.find(b"\r\n", start + SLICE)
        end = len(body) if end < 0 else end + 2
        piece = body[start:end] if start or end < len(body) else body
        pieces.append(_WSP_RUN.sub(b" ", _TRAILING_WSP.sub(b"\r\n", piece)))
        start = end
    joined = pieces[0] if len(pieces) == 1 else b"".join(pieces)   # b"" for no body
    del pieces
    return canonicalization.correct_empty_body(canonicalization.strip_trailing_lines(joined))


def install() -> None:
    canonicalization.Relaxed.canonicalize_body = staticmethod(relaxed_body)  # type: ignore[method-assign]
