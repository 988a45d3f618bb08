"""A tolerant parser of DMARC policy records (RFC 7489 sections 6.3 and 6.4); no I/O.

Real records are often sloppy (``fo:0``, ``pct100``, a stray word, ``;;``).
One bad tag must not void the rest: unknown and malformed tags are ignored,
each noted in ``problems``, and a bad value of an optional tag falls back to
its default. Only what RFC 7489 makes fatal makes a record unusable:

- the record does not start with ``v=DMARC1`` (tag ``v`` exactly, value
  exactly ``DMARC1``, section 6.3): it is not a DMARC record at all, and
  policy discovery goes on as if it were absent (section 6.6.3 step 3);
- ``p`` is missing or invalid, or ``sp`` is invalid (section 6.6.3 step 6):
  with at least one syntactically valid ``rua`` URI the record counts as
  ``p=none``, otherwise the domain gets no DMARC processing.

Tag names are case-sensitive, as in the DKIM tag-value syntax section 6.4
builds on; the keyword values of p, sp, adkim and aspf are not (ABNF
quoted strings).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

POLICIES = ("none", "quarantine", "reject")
ALIGNMENTS = ("r", "s")

_WSP = " \t"
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
# RFC 3986 scheme ":" hier-part, loosely: a scheme, then at least one visible character
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x7e]+\Z")
_SIZE_LIMIT = re.compile(r"![0-9]+[kKmMgGtT]?\Z")
_KEYWORD = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
_FO = re.compile(r"[01dDsS](?:[ \t]*:[ \t]*[01dDsS])*\Z")
KNOWN_TAGS = ("v", "p", "sp", "adkim", "aspf", "pct", "rua", "ruf", "fo", "rf", "ri")


@dataclass(frozen=True)
class DmarcRecord:
    """A parsed record. ``policy`` is "" when the record is unusable (see ``problems``)."""
    policy: str = ""                 # none quarantine reject, or "" (unusable)
    subdomain_policy: str = ""       # sp=, else p=
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple = ()                  # the syntactically valid URIs, size limits removed
    ruf: tuple = ()
    problems: tuple = ()             # what was ignored or replaced, one sentence each
    is_dmarc: bool = True            # False: not a v=DMARC1 record (discovery goes on)

    @property
    def usable(self) -> bool:
        return bool(self.policy)


def is_dmarc_record(text) -> bool:
    """Whether TEXT starts with the v=DMARC1 tag (RFC 7489 6.6.3 step 3)."""
    tags = _split(_as_text(text))
    return bool(tags) and _is_version(tags[0])


# Parsed records kept by their text (a DmarcRecord is immutable): a busy server meets
# the same records again and again. At most RECORDS_KEPT texts of at most
# MAX_KEPT_RECORD characters (real records are far shorter), about 1 MB; longer
# ones are parsed each time.
RECORDS_KEPT = 1024
MAX_KEPT_RECORD = 1024


def parse_record(text) -> DmarcRecord:
    """The DMARC record in TEXT (str or bytes); never raises."""
    text = _as_text(text)
    return _parse_kept(text) if len(text) <= MAX_KEPT_RECORD else _parse(text)


@functools.lru_cache(maxsize=RECORDS_KEPT)
def _parse_kept(text: str) -> DmarcRecord:
    return _parse(text)


def _parse(text: str) -> DmarcRecord:
    parts = _split(text)
    if not parts or not _is_version(parts[0]):
        return DmarcRecord(problems=("not a DMARC record: it must start with v=DMARC1",),
                           is_dmarc=False)
    problems = []
    tags = {}
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        name, value = name.strip(_WSP), value.strip(_WSP)
        if not part:
            problems.append("empty tag ignored")
        elif not sep or not _TAG_NAME.match(name):
            problems.append(f"malformed tag {_show(part)} ignored")
        elif name == "v":
            problems.append("v= repeated; ignored")
        elif name not in KNOWN_TAGS:
            problems.append(f"unknown tag {_show(name)} ignored")
        elif name in tags:
            problems.append(f"{name}= repeated; the first kept")
        else:
            tags[name] = value

    adkim = _keyword(tags, "adkim", ALIGNMENTS, "r", problems)
    aspf = _keyword(tags, "aspf", ALIGNMENTS, "r", problems)
    pct = _pct(tags, problems)
    rua = _uris(tags, "rua", problems)
    ruf = _uris(tags, "ruf", problems)
    _check_report_tags(tags, problems)

    policy = _keyword(tags, "p", POLICIES, "", problems)
    subdomain_policy = _keyword(tags, "sp", POLICIES, "", problems)
    if not policy or ("sp" in tags and not subdomain_policy):
        what = "p= missing" if "p" not in tags else "p= invalid" if not policy else "sp= invalid"
        if not rua:
            problems.append(f"{what} and no valid rua=: the record is unusable")
            return DmarcRecord(adkim=adkim, aspf=aspf, pct=pct, ruf=ruf, problems=tuple(problems))
        problems.append(f"{what}, with a valid rua=: treated as p=none")
        policy = subdomain_policy = "none"
    return DmarcRecord(policy, subdomain_policy or policy, adkim, aspf, pct, rua, ruf,
                       tuple(problems))


def _as_text(text) -> str:
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", "replace")
    return text if isinstance(text, str) else ""


def _split(text: str) -> list:
    """The tag-value pairs, WSP trimmed; a trailing ';' adds no empty tag."""
    parts = [p.strip(_WSP) for p in text.strip(_WSP).split(";")]
    if len(parts) > 1 and not parts[-1]:
        parts.pop()
    return parts if parts != [""] else []


def _is_version(part: str) -> bool:
    name, sep, value = part.partition("=")
    return bool(sep) and name.rstrip(_WSP) == "v" and value.lstrip(_WSP) == "DMARC1"


def _show(text: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _keyword(tags: dict, name: str, allowed: tuple, default: str, problems: list) -> str:
    if name not in tags:
        return default
    value = tags[name].lower()
    if value in allowed:
        return value
    if default:
        problems.append(f"{name}={_show(tags[name])[1:-1]} invalid; {name}={default} used")
    else:
        problems.append(f"{name}={_show(tags[name])[1:-1]} invalid")
    return default


def _pct(tags: dict, problems: list) -> int:
    value = tags.get("pct")
    if value is None:
        return 100
    if value.isascii() and value.isdigit() and len(value) <= 3 and int(value) <= 100:
        return int(value)
    problems.append(f"pct={_show(value)[1:-1]} invalid; pct=100 used")
    return 100


def _uris(tags: dict, name: str, problems: list) -> tuple:
    if name not in tags:
        return ()
    valid = []
    for item in tags[name].split(","):
        item = item.strip(_WSP)
        bang = item.rfind("!")
        uri = item[:bang] if bang > 0 and _SIZE_LIMIT.match(item[bang:]) else item
        if _URI.match(uri):
            valid.append(uri)
        else:
            problems.append(f"{name} URI {_show(item)} invalid; ignored")
    return tuple(valid)


def _check_report_tags(tags: dict, problems: list) -> None:
    """fo, rf and ri only concern reports, which are not sent: checked, never used."""
    if "fo" in tags and not _FO.match(tags["fo"]):
        problems.append(f"fo={_show(tags['fo'])[1:-1]} invalid; ignored")
    if "rf" in tags and not all(_KEYWORD.match(k.strip(_WSP)) for k in tags["rf"].split(":")):
        problems.append(f"rf={_show(tags['rf'])[1:-1]} invalid; ignored")
    if "ri" in tags and not (tags["ri"].isascii() and tags["ri"].isdigit()
                             and len(tags["ri"]) <= 32):
        problems.append(f"ri={_show(tags['ri'])[1:-1]} invalid; ignored")
