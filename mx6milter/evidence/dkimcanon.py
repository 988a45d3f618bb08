"""dkimpy's message parsing and relaxed canonicalisation (RFC 6376 3.4.2, 3.4.4):
cheaper, same bytes.

The message, parsed once per dkimpy object (each DKIM check, each ARC check):
dkimpy's ``rfc822_parse`` splits the whole message into lines, body included, and
joins the body's lines again with CRLF. ``rfc822_parse`` here reads only the header
block, up to the first empty line, line by line as dkimpy does (its pattern compiled
once; a block dkimpy would refuse is handed to dkimpy to raise), and keeps the body
as one slice, rewritten only when it has a bare LF (then each CRLF or LF becomes
CRLF, as dkimpy's join does): for a 4 KB message about a quarter of dkimpy's cost, for a
large one no list of lines at all.

The body, in slices: dkimpy canonicalises a relaxed body with two ``re.sub``
calls over the whole body. ``re.sub`` first builds a list of every piece
between matches, and every space of ordinary prose is a match: measured on a
2 MB text body the list peaks at 34 times the body's size (two bytes objects
per word, about 35 bytes each). Here the same two substitutions run over slices
of about ``SLICE`` bytes cut just after a CRLF (neither pattern can match across
one), so that list never holds more than one slice. It is cheaper in CPU too: a
match costs re.sub a piece and a replacement even where nothing changes, so the
compressing pattern here matches only runs that change (a tab in them, or two
blanks or more), and a slice with no tab skips each substitution outright when it
holds no " \\r\\n" or no two blanks in a row (what any match would need): a 3 KB
prose body costs under a tenth of what it did.

The header fields (``relaxed_headers``, for each signature and each ARC set): dkimpy
unfolds and compresses every signed field with a module-level ``re.sub`` each; here a
field without a line break or a run to compress is not substituted at all. And the
signature's own field, hashed with its b= value emptied: dkimpy's ``RE_BTAG`` spells
folding white space as nested optional groups that the regex engine enters for each
of the value's several hundred base64 characters; ``B_TAG`` is the same language
(FWS there matches exactly the strings of ``\\s*``) written as runs, so it matches at
the same places the same spans, for about a twelfth of the cost.

The tag=value lists (each signature, each key record parsed): dkimpy's
``parse_tag_value`` checks each tag name with a module-level ``re.match``;
``parse_tag_value`` here asks the one thing that pattern checks, an ASCII letter
first, of bytes: a third of the cost.

Every result is byte for byte dkimpy's: tests/unit/test_memory_budget_units.py and
tests/unit/test_dkimcanon_units.py compare them, with hypothesis, against the
functions and the pattern they replace, kept as the ``DKIMPY_*`` names. dkimpy picks
the canonicalisation from a class attribute, the parsers and the b= pattern from
module globals, with no hook of its own, so this is a monkeypatch, made explicitly
by ``install()``, which the wiring calls once (``service.build_evaluator``).
"""
from __future__ import annotations

import re

import dkim
import dkim.util
from dkim import canonicalization

SLICE = 64 << 10
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")      # dkimpy's strip_trailing_whitespace
# dkimpy's compress_whitespace replaces every [\t ]+ with one space; a run that is
# one space already is left alone here, the rest matched whole.
_WSP_RUN = re.compile(rb"\t[\t ]*| [\t ]+")

# What dkimpy's hash_headers removes from the signature's field: the b= value, as
# dkimpy's RE_BTAG finds it (group 1 kept).
B_TAG = re.compile(rb"([;\s]b\s*=)[a-zA-Z0-9+/=]*(?:\s+[a-zA-Z0-9+/=]+)*(?:\r?\n\Z)?")

_LINE_END = re.compile(rb"\r?\n")      # dkimpy splits lines at CRLF and at a bare LF alike
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")       # dkimpy's, compiled once

DKIMPY_RFC822_PARSE = dkim.rfc822_parse
DKIMPY_PARSE_TAG_VALUE = dkim.parse_tag_value
DKIMPY_RELAXED_BODY = canonicalization.Relaxed.canonicalize_body
DKIMPY_RELAXED_HEADERS = canonicalization.Relaxed.canonicalize_headers
DKIMPY_B_TAG = dkim.RE_BTAG


def rfc822_parse(message: bytes) -> tuple:
    """dkimpy's rfc822_parse: ([[name, value], ...], the body with CRLF line ends);
    what dkimpy raises for a header block it refuses, raised the same."""
    end = _header_end(message)
    if end is None:                       # no empty line: all header block, no body
        return _header_fields(message), b""
    start, body_start = end
    headers = _header_fields(message[:start])
    body = message[body_start:]
    if body.count(b"\n") != body.count(b"\r\n"):      # a bare LF somewhere
        body = _LINE_END.sub(b"\r\n", body)
    return headers, body


def _header_end(message: bytes):
    """(where the first empty line starts, where the line after it starts), or None:
    an empty line starts the message or follows a LF, and ends with CRLF, LF or the
    end of the message."""
    for separator in (b"\r\n", b"\n"):
        if message.startswith(separator):
            return 0, len(separator)
    crlf = message.find(b"\n\r\n")
    lf = message.find(b"\n\n", 0, len(message) if crlf < 0 else crlf + 1)
    if lf >= 0:
        return lf + 1, lf + 2
    if crlf >= 0:
        return crlf + 1, crlf + 3
    return None       # (one at the very end, after a last LF, leaves no body either)


def _header_fields(block: bytes) -> list:
    """The fields of a header block (no empty line in it but a last one) as dkimpy's
    parser reads them: [name, value with CRLF], continuation lines appended to the
    value; a line starting "From " skipped. A block it refuses goes to dkimpy's own
    parser, to raise what it raises."""
    fields: list = []
    lines = block.split(b"\r\n") if block.count(b"\n") == block.count(b"\r\n") \
        else _LINE_END.split(block)
    for line in lines:
        if not line:
            break
        if line[0] in (0x09, 0x20):
            if not fields:                  # nothing to continue
                return DKIMPY_RFC822_PARSE(block)[0]
            fields[-1][1] += line + b"\r\n"
            continue
        name = _FIELD_NAME.match(line)
        if name is not None:
            fields.append([name.group(1), line[name.end():] + b"\r\n"])
        elif not line.startswith(b"From "):
            return DKIMPY_RFC822_PARSE(block)[0]
    return fields


def parse_tag_value(tag_list: bytes) -> dict:
    """dkimpy's parse_tag_value (RFC 6376 3.2): {name: value}, both stripped; raises
    dkimpy's InvalidTagSpec for a tag without '=' or whose name does not start with an
    ASCII letter, DuplicateTag for a name seen before."""
    tags: dict = {}
    specs = tag_list.strip().split(b";")
    if not specs[-1]:
        specs.pop()                       # a trailing ';' is allowed
    for spec in specs:
        name, sep, value = spec.partition(b"=")
        name = name.strip()
        if not sep or not name[:1].isalpha():       # bytes: ASCII letters only
            raise dkim.util.InvalidTagSpec(spec)
        if name in tags:
            raise dkim.util.DuplicateTag(name)
        tags[name] = value.strip()
    return tags


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


def relaxed_headers(headers) -> list:
    """dkimpy's Relaxed.canonicalize_headers: names lower-cased and right-stripped;
    values unfolded (every CRLF or bare LF removed), each [\\t ]+ run one space, then
    stripped, with CRLF appended."""
    out = []
    for name, value in headers:
        if b"\n" in value:
            value = value.replace(b"\r\n", b"").replace(b"\n", b"")
        if b"\t" in value or b"  " in value:
            value = _WSP_RUN.sub(b" ", value)
        out.append((name.lower().rstrip(), value.strip() + b"\r\n"))
    return out


def install() -> None:
    """Put these behind dkimpy's message and tag-value parsers, relaxed
    canonicalisation and b= pattern (idempotent, process-wide)."""
    canonicalization.Relaxed.canonicalize_body = staticmethod(relaxed_body)  # type: ignore[method-assign]
    canonicalization.Relaxed.canonicalize_headers = staticmethod(relaxed_headers)  # type: ignore[method-assign]
    dkim.RE_BTAG = B_TAG
    dkim.rfc822_parse = rfc822_parse
    dkim.parse_tag_value = parse_tag_value


def installed() -> bool:
    return (canonicalization.Relaxed.canonicalize_body is relaxed_body
            and canonicalization.Relaxed.canonicalize_headers is relaxed_headers
            and dkim.RE_BTAG is B_TAG and dkim.rfc822_parse is rfc822_parse
            and dkim.parse_tag_value is parse_tag_value)
