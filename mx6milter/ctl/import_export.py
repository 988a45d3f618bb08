"""mx6ctl import and export: whole lists in and out of Redis.

``import`` reads one entry a line (see entries.py), or for addressbooks CSV
(``recipient,sender[,expires]``, ``,`` or ``;`` separated) or vCard (one
recipient's contacts). Bad lines are reported with their numbers and skipped
(exit 2 unless ``--allow-rejects``), or with ``--strict`` the whole file is
refused before anything is written. ``--replace`` makes the
file the whole source, swapped in atomically by the store. ``export`` writes
what ``import`` reads, for every kind in IMPORT_KINDS (the greenlist's, with
ctl/greenlist's parsers and export_line, included).
"""
from __future__ import annotations

import collections
import csv
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from collections.abc import Callable

import shtab
from tqdm import tqdm

from .. import vcard
from .common import (UsageError, add_expires_option, add_source_option,
                         address_ids, load, note, now, open_store, parse_expires, public_suffix_test)
from .greenlist import AsnTable, GreenLineParser, export_line
from ..entries import (DEFAULT_REQUIREMENT, REQUIREMENTS, Entry, EntryError, LineParser,
                      format_expiry, format_line, parse_expiry, value_expiry)
from ..store import EmptyReplace

MAX_SHOWN = 100    # bad lines printed; the rest are counted
CSV_HEADER = ("recipient", "sender", "expires")


# --- input ------------------------------------------------------------------------------


class Input:
    """The input file's lines as (number, text or None if not UTF-8); readable twice.

    Lines end with LF, CRLF or a lone CR (Excel's "CSV (Macintosh)"), from a
    file as from standard input. UTF-16 (Windows address book exports) is
    refused at once rather than reported as every line not being UTF-8.
    """

    def __init__(self, path: str):
        self.path = path
        self.consumed = 0
        try:
            if path == "-":
                self._data = sys.stdin.buffer.read()
                self.size = len(self._data)
                start = self._data[:2]
            else:
                if os.path.isdir(path):
                    raise UsageError(f"{path}: is a directory")
                self._data = None
                self.size = os.path.getsize(path)
                with open(path, "rb") as handle:   # fail now, not halfway through
                    start = handle.read(2)
        except OSError as err:
            raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
        if start in (b"\xff\xfe", b"\xfe\xff"):
            raise UsageError(f"{path}: UTF-16 text; mx6ctl reads UTF-8 "
                             "(convert it: iconv -f UTF-16 -t UTF-8)")

    def lines(self):
        self.consumed = 0
        if self._data is not None:
            raw_lines = iter(self._data.splitlines(keepends=True))
            yield from self._decode(raw_lines)
            return
        try:
            with open(self.path, "rb") as handle:
                yield from self._decode(_split_lone_cr(handle))
        except OSError as err:
            raise UsageError(f"{self.path}: cannot read: {err.strerror or err}") from None

    def _decode(self, raw_lines):
        for number, raw in enumerate(raw_lines, start=1):
            self.consumed += len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, None
                continue
            if number == 1:
                text = text.lstrip("\ufeff")
            yield number, text.rstrip("\r\n")


def _split_lone_cr(raw_lines):
    """A file's LF-ended lines, split at a lone CR as bytes.splitlines splits stdin."""
    for raw in raw_lines:
        if raw.find(b"\r", 0, -2) == -1:    # the common case: no CR but maybe a final CRLF
            yield raw
        else:
            yield from raw.splitlines(keepends=True)


def detect_format(path: str, kind: str, first_line: str) -> str:
    lower = path.lower()
    if kind != "ab":
        return "lines"
    if lower.endswith((".vcf", ".vcard")) or first_line.upper().startswith("BEGIN:VCARD"):
        return "vcard"
    if lower.endswith(".csv"):
        return "csv"
    return "lines"


def _first_line(source: Input) -> str:
    for _number, text in source.lines():
        if text and text.strip() and not text.lstrip().startswith("#"):
            return text.strip()
    return ""


NOT_UTF8 = "not valid UTF-8"


def parse_lines(numbered, parser: LineParser):
    for number, text in numbered:
        if text is None:
            yield number, None, NOT_UTF8
            continue
        try:
            entry = parser.parse(text)
        except EntryError as err:
            yield number, None, str(err)
            continue
        if entry is not None:
            yield number, entry, None


def csv_delimiter(first_row: str) -> str:
    """',' or ';' (how spreadsheets write CSV where the decimal mark is a comma): the one
    that splits the file's first row into 2 or 3 cells; ',' if neither does."""
    for delimiter in (",", ";"):
        try:
            if len(next(csv.reader([first_row], delimiter=delimiter), [])) in (2, 3):
                return delimiter
        except csv.Error:
            continue
    return ","


def parse_csv(numbered, parser: LineParser):
    header_seen = False
    delimiter = None
    for number, text in numbered:
        if text is None:
            yield number, None, NOT_UTF8
            continue
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        delimiter = delimiter or csv_delimiter(text)
        try:
            row = [cell.strip() for cell in next(csv.reader([text], delimiter=delimiter))]
        except (csv.Error, StopIteration) as err:
            yield number, None, f"not a CSV row: {err}"
            continue
        if not header_seen and row and row[0].lower() in ("recipient", "rcpt"):
            header_seen = True
            continue
        header_seen = True
        if len(row) not in (2, 3):
            yield number, None, f"expected recipient,sender[,expires], got {len(row)} columns"
            continue
        try:
            expires = parse_expiry(row[2], parser.now) if len(row) == 3 and row[2] \
                else parser.default_expires
            yield number, parser.entry(row[0], row[1], expires=expires), None
        except EntryError as err:
            yield number, None, str(err)


def parse_vcard(numbered, parser: LineParser, recipient: str):
    undecodable = collections.deque()

    def good_lines():
        for number, text in numbered:
            if text is None:
                undecodable.append(number)
            else:
                yield number, text

    for event, number, value in vcard.emails(good_lines()):
        while undecodable:
            yield undecodable.popleft(), None, NOT_UTF8
        if event == "error":
            yield number, None, value
            continue
        try:
            yield number, Entry(recipient, parser.ids(value), str(parser.default_expires)), None
        except EntryError as err:
            yield number, None, str(err)
    while undecodable:
        yield undecodable.popleft(), None, NOT_UTF8


# --- progress and reporting ----------------------------------------------------------


class Progress:
    """tqdm's progress bar over the bytes of the file, on stderr and only on a terminal.

    Lines written through ``write`` (the Reporter's) appear above the bar, which
    tqdm clears and redraws around them, so the two never run into each other.
    """

    def __init__(self, total: int, stream=None, enabled: bool | None = None, label: str = ""):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.bar = tqdm(total=total or None, desc=label, unit="B", unit_scale=True, file=self.stream,
                        disable=not self.enabled, mininterval=0.1, **_size(self.stream))

    def update(self, done: int) -> None:
        if self.enabled and done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def write(self, line: str) -> None:
        if self.enabled:
            self.bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")

    def finish(self, done: int) -> None:
        self.update(done)
        self.bar.close()


def _size(stream) -> dict:
    """The terminal's size for tqdm, 80x24 where it says 0x0 (a pseudo-terminal nobody sized:
    tqdm would draw nothing) or has none."""
    try:
        columns, lines = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        columns = lines = 0
    return {"ncols": columns or 80, "nrows": lines or 24}


class Reporter:
    """Bad lines and notes as FILE:LINE: message, counted; written by ``write`` (stderr, or
    through the progress bar)."""

    def __init__(self, path: str, quiet: bool = False, write=None, skipping: bool = True):
        self.path = path
        self.quiet = quiet
        self.write = write or (lambda line: sys.stderr.write(line + "\n"))
        self.rejected = 0
        self.suffix = "; skipped" if skipping else ""

    def reject(self, number: int, message: str) -> None:
        self.rejected += 1
        if self.rejected <= MAX_SHOWN:
            self.write(f"{self.path}:{number}: {message}{self.suffix}")

    def note(self, number: int, message: str) -> None:
        if not self.quiet:
            self.write(f"{self.path}:{number}: note: {message}")

    def finish(self) -> None:
        if self.rejected > MAX_SHOWN:
            self.write(f"{self.path}: {self.rejected - MAX_SHOWN} more bad lines not shown")


# --- import ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportKind:
    """A kind ``import`` loads.

    ``parser(args, expires, ids)`` makes a fresh line parser (``parse(line)``
    gives an Entry, None for a blank line, or raises EntryError) for each pass
    over the file. A ``snapshot`` kind always replaces its source. ``extra``
    adds the parser's own counts to the JSON summary.
    """
    store_kind: str
    parser: Callable
    options: tuple = ()              # of --format, --recipient, --require: those that apply
    snapshot: bool = False
    entries: str = "entries"         # what the valid lines are, for the empty-replace refusal
    extra: Callable = lambda parser: {}


def _entry_lines(kind: str) -> Callable:
    def make(args, expires, ids):
        return LineParser(kind, now(), ids, public_suffix_test(args) if kind == "domain" else None,
                          default_expires=expires,
                          default_requirement=args.require or DEFAULT_REQUIREMENT)
    return make


def _green_lines(kind: str) -> Callable:
    return lambda args, expires, ids: GreenLineParser(
        kind, now(), expires, public_suffix_test(args) if kind == "mishandle4xx" else None)


IMPORT_KINDS = {
    "ip": ImportKind("ip", _entry_lines("ip")),
    "domain": ImportKind("domain", _entry_lines("domain"), options=("--require",)),
    "addressbook": ImportKind("ab", _entry_lines("ab"), options=("--format", "--recipient")),
    "asn": ImportKind("asn", lambda args, expires, ids: AsnTable(expires), snapshot=True,
                      entries="IPv6 entries",
                      extra=lambda table: {"ipv4_skipped": table.ipv4_skipped}),
    "green": ImportKind("green", _green_lines("green")),
    "asnlist": ImportKind("asnlist", _green_lines("asnlist")),
    "mishandle4xx": ImportKind("mishandle4xx", _green_lines("mishandle4xx")),
}
OPTION_USE = {"--format": "addressbook imports", "--recipient": "vCard addressbook imports",
              "--require": "domain imports"}


def _check_options(args, spec: ImportKind) -> None:
    given = {"--format": args.format not in ("auto", "lines"),
             "--recipient": args.recipient is not None, "--require": args.require is not None}
    for option, is_given in given.items():
        if is_given and option not in spec.options:
            shown = f"--format {args.format}" if option == "--format" else option
            raise UsageError(f"{shown} is for {OPTION_USE[option]}; "
                             f"it does not apply to import {args.kind}")


def cmd_import(args) -> int:
    spec = IMPORT_KINDS[args.kind]
    kind = spec.store_kind
    _check_options(args, spec)
    replace = args.replace or spec.snapshot
    if args.allow_empty and not replace:
        raise UsageError("--allow-empty only means something with --replace")
    config = load(args)
    source_name = args.source or "local"
    store = open_store(config)
    ids = address_ids(config, store) if kind == "ab" else None
    expires = parse_expires(args.expires)
    parser = spec.parser(args, expires, ids)
    source = Input(args.file)
    fmt = args.format if args.format != "auto" else detect_format(args.file, kind, _first_line(source))
    recipient = _vcard_recipient(args, fmt, ids)

    summary = {"kind": args.kind, "source": source_name, "file": args.file, "format": fmt,
               "replace": replace}
    if args.strict:
        _refuse_bad_lines(args, summary, _numbered_items(source, fmt, parser, recipient))
        parser = spec.parser(args, expires, ids)     # its counts start again
    result, rejected = _store_entries(
        args, spec, store, source, source_name, replace,
        lambda: _numbered_items(source, fmt, parser, recipient))
    summary.update(added=result.added, present=result.present, repeated=result.repeated,
                   removed=result.removed, rejected=rejected, written=True,
                   **spec.extra(parser))
    print(json.dumps(summary))
    if not rejected:
        return 0
    print(f"mx6ctl: {args.file}: {rejected} bad {'line' if rejected == 1 else 'lines'} skipped, "
          "the others loaded" + ("" if args.allow_rejects else
                                 " (--allow-rejects: exit 0 all the same)"), file=sys.stderr)
    return 0 if args.allow_rejects else 2


def _vcard_recipient(args, fmt: str, ids):
    """The recipient a vCard file's contacts belong to (--recipient); None for other formats."""
    if fmt == "vcard":
        if not args.recipient:
            raise UsageError("a vCard file holds one recipient's contacts: give --recipient ADDRESS")
        try:
            return ids(args.recipient)
        except EntryError as err:
            raise UsageError(f"--recipient: {err}") from None
    if args.recipient:
        raise UsageError("--recipient is for vCard files; CSV and lines name the recipient per line")
    return None


def _numbered_items(source: Input, fmt: str, parser, recipient):
    """SOURCE parsed in format FMT: (number, entry, error) for each line."""
    numbered = source.lines()
    if fmt == "csv":
        return parse_csv(numbered, parser)
    if fmt == "vcard":
        return parse_vcard(numbered, parser, recipient)
    return parse_lines(numbered, parser)


def _refuse_bad_lines(args, summary: dict, items) -> None:
    """--strict's first pass: report every bad line and, if there is one, write nothing."""
    reporter = Reporter(args.file, args.quiet, skipping=False)
    for number, _entry, error in items:
        if error:
            reporter.reject(number, error)
    reporter.finish()
    if reporter.rejected:
        summary.update(added=0, present=0, repeated=0, removed=0, rejected=reporter.rejected,
                       written=False)
        print(json.dumps(summary))
        raise UsageError(f"{args.file}: {reporter.rejected} bad lines; nothing written (--strict)")


def _store_entries(args, spec: ImportKind, store, source: Input, source_name: str, replace: bool,
                   items: Callable) -> tuple:
    """Stream the good entries of ITEMS() into the store, showing progress; bad lines are
    reported and skipped. Return the store's result and the number of bad lines."""
    progress = Progress(source.size, enabled=None if not args.quiet else False,
                        label=f"import {args.kind}")
    reporter = Reporter(args.file, args.quiet, progress.write)   # the first pass showed no notes

    def entries():
        for number, entry, error in items():
            progress.update(source.consumed)
            if error:
                reporter.reject(number, error)
                continue
            if entry.note:
                reporter.note(number, entry.note)
            yield entry.triple()

    try:
        result = store.load(spec.store_kind, source_name, entries(), replace=replace,
                            allow_empty=args.allow_empty)
    except EmptyReplace:
        raise UsageError(f"{args.file}: no valid {spec.entries}; refusing to replace source "
                         f"{source_name} with an empty list (--allow-empty to empty it)") from None
    finally:
        progress.finish(source.consumed)
        reporter.finish()
    return result, reporter.rejected


def register_import(sub) -> None:
    p = sub.add_parser(
        "import", help="load entries from a file (one a line; CSV or vCard for addressbooks)",
        description="Load entries from FILE (- for standard input): one entry a line with "
                    "optional expires= (and require= for domains), # comments; addressbooks "
                    "also as CSV (recipient,sender[,expires]) or a vCard file of one recipient's "
                    "contacts. Prints a JSON summary: added, present, repeated, removed, rejected. "
                    "Greenlist kinds: asn (prefix<TAB>length<TAB>asn lines, IPv6 only, always "
                    "replaces its source), green, asnlist, mishandle4xx. Exit 0; 2 when bad "
                    "lines were skipped (unless --allow-rejects) or, with --strict, refused.",
        examples=("mx6ctl import ip --source feed --replace partner-networks.txt",
                  "mx6ctl import addressbook --source carddav contacts.csv"))
    p.add_argument("kind", choices=tuple(IMPORT_KINDS), help="what the file holds")
    p.add_argument("file", metavar="FILE", help="the file to load; - for standard input"
                   ).complete = shtab.FILE  # type: ignore[attr-defined]
    p.add_argument("--replace", action="store_true",
                   help="the file becomes the whole source, swapped in atomically")
    p.add_argument("--allow-empty", action="store_true",
                   help="with --replace, let a file without entries empty the source")
    p.add_argument("--strict", action="store_true",
                   help="refuse the whole file if any line is bad (default: skip bad lines, "
                        "load the good ones and exit 2)")
    p.add_argument("--allow-rejects", action="store_true",
                   help="exit 0 even when bad lines were skipped (they are still reported)")
    p.add_argument("--format", choices=("auto", "lines", "csv", "vcard"), default="auto",
                   help="addressbook file format (default: by extension .csv/.vcf, or content)")
    p.add_argument("--recipient", metavar="ADDRESS", help="vCard: whose contacts these are")
    p.add_argument("--require", choices=REQUIREMENTS, default=None,
                   help="domain: requirement of lines without require= (default dmarc)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no notes")
    add_source_option(p, "the source to load into (default local)")
    add_expires_option(p)
    p.set_defaults(func=cmd_import)


# --- export ---------------------------------------------------------------------------


def cmd_export(args) -> int:
    config = load(args)
    kind = IMPORT_KINDS[args.kind].store_kind
    if args.format == "csv" and kind != "ab":
        raise UsageError("--format csv is for addressbook exports")
    store = open_store(config)
    show = address_ids(config, store).show if kind == "ab" else (lambda s: s)
    if args.output:
        if os.path.isdir(args.output):
            raise UsageError(f"{args.output}: is a directory")
        directory = os.path.dirname(os.path.abspath(args.output))
        try:
            handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=directory,
                                                 prefix=".mx6ctl-export-", delete=False)
        except OSError as err:
            raise UsageError(f"{args.output}: cannot write: {err.strerror or err}") from None
    else:
        handle = sys.stdout
    try:
        written, expired = _write_export(handle, kind, args, store, show, now())
        if args.output:
            handle.close()
            try:
                os.replace(handle.name, args.output)
            except OSError as err:
                raise UsageError(f"{args.output}: cannot write: {err.strerror or err}") from None
    except BaseException:
        if args.output:
            handle.close()
            os.unlink(handle.name)
        raise
    print(f"mx6ctl: exported {written} entries" + (f", left out {expired} expired" if expired else "")
          + (f" to {args.output}" if args.output else ""), file=sys.stderr)
    return 0


def _export_line(kind: str, hit, show) -> str:
    if kind in ("ip", "domain", "ab"):
        return format_line(kind, hit.key, hit.field, hit.value, show)
    return export_line(kind, hit.field, hit.value)


def _write_export(handle, kind, args, store, show, clock) -> tuple:
    hashed = store.addressbook_secret is not None and kind == "ab"
    if args.format == "csv":       # the header row first, as spreadsheets expect; no comments
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        if hashed:
            note("privacy mode: keyed hashes, importable only with the same secret")
    else:
        sources = f"source {args.source}" if args.source else "every source"
        handle.write(f"# mx6ctl export {args.kind}, {sources}, {format_expiry(int(clock))}\n")
        if hashed:
            handle.write("# privacy mode: keyed hashes, importable only with the same secret\n")
    written = expired = 0
    for hit in store.entries(kind, args.source):
        expires = value_expiry(hit.value)
        if expires and expires <= clock:
            expired += 1
            continue
        if args.format == "csv":
            writer.writerow((show(hit.key), show(hit.field), format_expiry(expires) if expires else ""))
        else:
            handle.write(_export_line(kind, hit, show) + "\n")
        written += 1
    return written, expired


def register_export(sub) -> None:
    p = sub.add_parser("export", help="write entries in the format import reads",
                       description="Write the entries of a kind (one source or all) in the "
                                   "format import reads; expired entries are left out. "
                                   "CSV starts with its header row.",
                       examples=("mx6ctl export ip --source local -o ip-local.txt",
                                 "mx6ctl export addressbook --format csv > addressbooks.csv"))
    p.add_argument("kind", choices=tuple(IMPORT_KINDS), help="what to export: any kind import loads")
    p.add_argument("--format", choices=("lines", "csv"), default="lines",
                   help="addressbook: lines (default) or CSV")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write FILE (replaced atomically) instead of standard output")
    add_source_option(p, "export one source (default: every source)")
    p.set_defaults(func=cmd_export)
