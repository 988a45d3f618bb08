"""DKIM relaxed body canonicalisation (RFC 6376 3.4.4) in slices, for dkimpy.

Why this wraps dkimpy: dkimpy canonicalises a relaxed body with two ``re.sub``
calls over the whole body. ``re.sub`` first builds a list of every piece
between matches, and every space of ordinary prose is a match: measured on a
2 MB text body the list peaks at 34 times the body's size (two bytes objects
per word, about 35 bytes each). Here the same two substitutions run over slices
of about ``SLICE`` bytes cut just after a CRLF (neither pattern can match across
one), so that list never holds more than one slice. The result is byte for
byte dkimpy's (tests/unit/test_memory_budget_units.py compares them, with
hypothesis, against the function this replaces).

dkimpy picks the canonicalisation from a class attribute with no hook of its
own, so this is a monkeypatch, made explicitly by ``install()``, which the
wiring calls once (``service.build_evaluator``); ``DKIMPY_RELAXED_BODY`` keeps
dkimpy's own function for the comparison.
"""
from __future__ import annotations

import re

from dkim import canonicalization

SLICE = 64 << 10
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")      # dkimpy's strip_trailing_whitespace
# dkimpy's compress_whitespace replaces every [\t ]+ with one space; a run that is
# one space already is left alone here, the rest matched whole.
_WSP_RUN = re.compile(rb"\t[\t ]*| [\t ]+")

DKIMPY_RELAXED_BODY = canonicalization.Relaxed.canonicalize_body


def relaxed_body(body: bytes) -> bytes:
    pieces = []
    start = 0
    while start < len(body):
        end = body.find(b"\r\n", start + SLICE)
        end = len(body) if end < 0 else end + 2
        piece = body[start:end] if start or end < len(body) else body
        pieces.append(_canonical_slice(piece))
        start = end
    joined = pieces[0] if len(pieces) == 1 else b"".join(pieces)   # b"" for no body
    del pieces
    return canonicalization.correct_empty_body(canonicalization.strip_trailing_lines(joined))


def _canonical_slice(piece: bytes) -> bytes:
    if b"\t" in piece:
        return _WSP_RUN.sub(b" ", _TRAILING_WSP.sub(b"\r\n", piece))
    # Without a tab, trailing blanks end in " \r\n" and a run to compress holds "  ".
    if b" \r\n" in piece:
        piece = _TRAILING_WSP.sub(b"\r\n", piece)
    if b"  " in piece:
        piece = _WSP_RUN.sub(b" ", piece)
    return piece


def install() -> None:
    """Make dkimpy's relaxed body canonicalisation this one (idempotent, process-wide)."""
    canonicalization.Relaxed.canonicalize_body = staticmethod(relaxed_body)  # type: ignore[method-assign]


def installed() -> bool:
    return canonicalization.Relaxed.canonicalize_body is relaxed_body
