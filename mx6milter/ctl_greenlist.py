"""mx6ctl for the greenlist (greenlist.py): its lists, the prefix-to-ASN table, the history.

    mx6ctl green add|remove|list [PREFIX ...]               greenlisted networks
    mx6ctl asnlist add|remove|list [ASN ...]                the ASN greenlist
    mx6ctl mishandle4xx add|remove|list [PREFIX|DOMAIN ...] senders that mishandle 4xx
    mx6ctl asn lookup ADDRESS ...                           the table's answer for an address
    mx6ctl history show DOMAIN ...                          a From domain's IPv4 history
    mx6ctl import asn|green|asnlist|mishandle4xx FILE       bulk loads, as import does

``import asn`` reads the common ``prefix<TAB>length<TAB>asn`` format (CAIDA's
pfx2as; ``64500_64501`` or ``64500,64501`` for several origins), takes the
IPv6 lines, skips and counts the IPv4 ones, and always replaces its source:
the table is a snapshot, and a merge would keep withdrawn prefixes. The other
kinds read one entry a line like ``import ip`` (``expires=`` allowed).
"""
from __future__ import annotations

import ipaddress
import json
import re

from .ctl_common import (UsageError, add_expires_option, add_source_option, load, note, now,
                         open_store, public_suffix_test)
from .ctl_import import Input, Progress, Reporter, parse_lines
from .entries import (Entry, EntryError, format_expiry, parse_domain, parse_expiry,
                      parse_ipv6_prefix, split_line, value_expiry)
from .greenlist import Greenlist
from .history import History
from .store import EmptyReplace, field_to_network, ip_candidates, ip_field

KINDS = {   # kind -> (what an entry is, help)
    "green": ("PREFIX", "greenlisted IPv6 networks: accepted subject to content filtering"),
    "asnlist": ("ASN", "the ASN greenlist: networks of these ASNs are greenlisted"),
    "mishandle4xx": ("PREFIX|DOMAIN", "known legitimate senders that mishandle 4xx replies, "
                                      "by network or by (forward-confirmed) PTR domain"),
}
IMPORT_KINDS = ("asn",) + tuple(KINDS)
MAX_ASN = 2 ** 32 - 1
_ASN = re.compile(r"(?:AS)?(\d{1,10})", re.I)
_ORIGIN_SPLIT = re.compile(r"[_,]")


# --- entries as operators write them ---------------------------------------------------


def parse_asn(text: str) -> str:
    m = _ASN.fullmatch(text.strip())
    if not m or not 0 < int(m.group(1)) <= MAX_ASN:
        raise EntryError(f"{text!r}: expected an AS number such as 64500 or AS64500")
    return str(int(m.group(1)))


class GreenLineParser:
    """One entry a line (``WORD [expires=WHEN]``) for green, asnlist and mishandle4xx."""

    def __init__(self, kind: str, now_: float, default_expires: int = 0, is_public=None):
        self.kind = kind
        self.now = now_
        self.default_expires = default_expires
        self.is_public = is_public

    def parse(self, line: str):
        words, options = split_line(line)
        if not words and not options:
            return None
        if set(options) - {"expires"}:
            raise EntryError(f"unknown option {sorted(set(options) - {'expires'})[0]}=; known: expires=")
        if len(words) != 1:
            raise EntryError(f"expected {KINDS[self.kind][0]} [expires=WHEN], got {len(words)} words")
        expires = parse_expiry(options["expires"], self.now) if "expires" in options \
            else self.default_expires
        return self.entry(words[0], expires)

    def entry(self, word: str, expires: int) -> Entry:
        if self.kind == "asnlist":
            return Entry("", parse_asn(word), str(expires))
        if self.kind == "mishandle4xx" and not _is_address(word):
            domain, remark = parse_domain(word, self.is_public)
            return Entry("", domain, str(expires), remark)
        return Entry("", ip_field(parse_ipv6_prefix(word)), str(expires))


def _is_address(word: str) -> bool:
    try:
        ipaddress.ip_network(word.strip(), strict=False)
        return True
    except ValueError:
        return False


def show_field(kind: str, field: str) -> str:
    return str(field_to_network(field)) if "/" in field else (f"AS{field}" if kind == "asnlist"
                                                              else field)


class AsnTable:
    """Lines of ``prefix<TAB>length<TAB>asn``; counts the IPv4 lines it skips."""

    def __init__(self, expires: int = 0):
        self.expires = expires
        self.ipv4_skipped = 0

    def parse(self, line: str):
        text = line.split("#", 1)[0].strip()
        if not text:
            return None
        parts = text.split()
        if len(parts) != 3:
            raise EntryError(f"expected PREFIX<TAB>LENGTH<TAB>ASN, got {len(parts)} fields")
        prefix, length, origins = parts
        if not length.isdigit():
            raise EntryError(f"{length!r}: not a prefix length")
        try:
            network = ipaddress.ip_network(f"{prefix}/{int(length)}", strict=True)
        except ValueError:
            problem = "host bits set" if _is_address(f"{prefix}/{int(length)}") \
                else "not an IP prefix"
            raise EntryError(f"{prefix}/{length}: {problem}") from None
        if network.version == 4:
            self.ipv4_skipped += 1
            return None
        if network.network_address.ipv4_mapped is not None:
            raise EntryError(f"{network}: IPv4-mapped; such sessions are IPv4 and never judged")
        asns = sorted({int(parse_asn(a)) for a in _ORIGIN_SPLIT.split(origins) if a})
        if not asns:
            raise EntryError(f"{origins!r}: no AS number")
        return Entry("", ip_field(network), ",".join(map(str, asns)) + f" {self.expires}")


# --- add, remove, list ---------------------------------------------------------------------


def cmd_entries(args) -> int:
    config = load(args)
    kind = args.command
    if args.action == "list":
        if args.entries:
            raise UsageError(f"{kind} list takes no {KINDS[kind][0]}")
        store = open_store(config)
        clock = now()
        for hit in store.entries(kind, args.source):
            expires = value_expiry(hit.value)
            print(f"{show_field(kind, hit.field)}\tsource={hit.source}\texpires={format_expiry(expires)}"
                  + ("\t(expired)" if expires and expires <= clock else ""))
        return 0
    if not args.entries:
        raise UsageError(f"{kind} {args.action}: give at least one {KINDS[kind][0]}")
    expires = _expires(args) if args.action == "add" else 0
    parser = GreenLineParser(kind, now(), expires, public_suffix_test())
    entries, errors = [], []
    for text in args.entries:
        try:
            entries.append(parser.entry(text, expires))
        except EntryError as err:
            errors.append(str(err))
    if errors:
        raise UsageError("\n".join(errors) if len(errors) == 1 else
                         f"{len(errors)} bad entries, nothing written:\n  " + "\n  ".join(errors))
    for entry in entries:
        if entry.note:
            note(entry.note)
    store = open_store(config)
    if args.action == "add":
        source = args.source or "local"
        result = store.load(kind, source, [e.triple() for e in entries])
        print(f"added {result.added} new, {result.present + result.repeated} already present "
              f"(value updated) in source {source}")
    else:
        count = store.remove(kind, args.source, [(e.suffix, e.field) for e in entries])
        where = f"source {args.source}" if args.source else "any source"
        print(f"removed {count}" + (f"; {len(entries) - count} not found in {where}"
                                    if count < len(entries) else ""))
    return 0


def _expires(args) -> int:
    try:
        return parse_expiry(args.expires, now())
    except EntryError as err:
        raise UsageError(str(err)) from None


# --- asn lookup, history show ----------------------------------------------------------------


def cmd_asn(args) -> int:
    store = open_store(load(args))
    for text in args.addresses:
        try:
            address = ipaddress.IPv6Address(text.strip())
        except ValueError:
            raise UsageError(f"{text!r}: not an IPv6 address") from None
        hits = store.lookup({"asn": [("", f) for f in ip_candidates(address)]})["asn"]
        print(f"{address}\t{Greenlist.asn_finding(hits)}")
    return 0


def cmd_history(args) -> int:
    config = load(args)
    history = History(open_store(config), config.greenlist)
    section = config.greenlist
    for domain in args.domains:
        entry = history.read(domain.strip().rstrip(".").lower())
        if entry is None:
            print(f"{domain}\tno IPv4 history")
            continue
        qualifies = entry.count >= section.history_min_messages and \
            entry.span_days >= section.history_min_days
        print(f"{domain}\tmessages={entry.count}\tdays={entry.span_days}"
              f"\tfirst={format_expiry(entry.first_day * 86400)[:10]}"
              f"\tlast={format_expiry(entry.last_day * 86400)[:10]}"
              f"\texpires={format_expiry(entry.expires)}"
              f"\t{'qualifies' if qualifies else 'below threshold'}"
              + ("" if section.history else " (history is off in [greenlist])"))
    return 0


# --- import -----------------------------------------------------------------------------------


def cmd_import(args) -> int:
    """``import`` for the greenlist's kinds; the flow and options of ctl_import's."""
    kind = args.kind
    if getattr(args, "format", "auto") != "auto" or getattr(args, "recipient", None) or \
            getattr(args, "require", "dmarc") != "dmarc":
        raise UsageError(f"--format, --recipient and --require do not apply to import {kind}")
    if args.allow_empty and not (args.replace or kind == "asn"):
        raise UsageError("--allow-empty only means something with --replace")
    config = load(args)
    store = open_store(config)
    expires = _expires(args)
    source_name = args.source or "local"
    replace = args.replace or kind == "asn"
    parser = AsnTable(expires) if kind == "asn" else \
        GreenLineParser(kind, now(), expires, public_suffix_test())
    source = Input(args.file)
    summary = {"kind": kind, "source": source_name, "file": args.file, "format": "lines",
               "replace": replace}
    if args.strict:
        reporter = Reporter(args.file, args.quiet, skipping=False)
        for number, _entry, error in parse_lines(source.lines(), parser):
            if error:
                reporter.reject(number, error)
        reporter.finish()
        if reporter.rejected:
            summary.update(added=0, present=0, repeated=0, removed=0, rejected=reporter.rejected,
                           written=False)
            print(json.dumps(summary))
            raise UsageError(f"{args.file}: {reporter.rejected} bad lines; nothing written (--strict)")
        if kind == "asn":
            parser = AsnTable(expires)      # count the IPv4 lines once
    reporter = Reporter(args.file, args.quiet)
    progress = Progress(source.size, enabled=None if not args.quiet else False,
                        label=f"import {kind}")
    seen = 0

    def entries():
        nonlocal seen
        for number, entry, error in parse_lines(source.lines(), parser):
            seen = number
            progress.update(source.consumed, number)
            if error:
                reporter.reject(number, error)
                continue
            if entry.note:
                reporter.note(number, entry.note)
            yield entry.triple()

    try:
        result = store.load(kind, source_name, entries(), replace=replace,
                            allow_empty=args.allow_empty)
    except EmptyReplace:
        raise UsageError(f"{args.file}: no valid IPv6 entries; refusing to replace source "
                         f"{source_name} with an empty list (--allow-empty to empty it)") from None
    finally:
        progress.finish(source.consumed, seen)
        reporter.finish()
    summary.update(added=result.added, present=result.present, repeated=result.repeated,
                   removed=result.removed, rejected=reporter.rejected, written=True)
    if kind == "asn":
        summary["ipv4_skipped"] = parser.ipv4_skipped
    print(json.dumps(summary))
    return 0


# --- registration -----------------------------------------------------------------------------


def register(sub) -> None:
    for kind, (metavar, text) in KINDS.items():
        p = sub.add_parser(kind, help=text, description=text[:1].upper() + text[1:] + ".")
        p.add_argument("action", choices=("add", "remove", "list"))
        p.add_argument("entries", nargs="*", metavar=metavar)
        add_source_option(p, "source of the entries (add: default local; remove, list: every source)")
        add_expires_option(p)
        p.set_defaults(func=cmd_entries)
    p = sub.add_parser("asn", help="what the prefix-to-ASN table says about an address",
                       description="Look addresses up in the prefix-to-ASN table (longest prefix) "
                                   "and the ASN greenlist. Load the table with: import asn FILE.")
    p.add_argument("action", choices=("lookup",))
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.set_defaults(func=cmd_asn)
    p = sub.add_parser("history", help="a From domain's IPv4 history (greenlist)",
                       description="Show what the milter learnt about From domains over IPv4.")
    p.add_argument("action", choices=("show",))
    p.add_argument("domains", nargs="+", metavar="DOMAIN")
    p.set_defaults(func=cmd_history)
    _extend_import(sub)


def _extend_import(sub) -> None:
    """Teach ``import`` (ctl_import's parser) the greenlist's kinds.

    One parser must own the word ``import``; this adds our kinds to its KIND
    choices and sends them here, keeping every option it defines.
    """
    importer = sub.choices.get("import")
    if importer is None:
        raise RuntimeError("ctl_greenlist.register must come after ctl_import's in REGISTRARS")
    kind_action = next(a for a in importer._actions if a.dest == "kind")
    kind_action.choices = tuple(kind_action.choices) + IMPORT_KINDS
    others = importer.get_default("func")
    importer.set_defaults(func=lambda args: cmd_import(args) if args.kind in IMPORT_KINDS
                          else others(args))
    importer.description = (importer.description or "") + (
        " Greenlist kinds: asn (prefix<TAB>length<TAB>asn lines, IPv6 only, always replaces "
        "its source), green, asnlist, mishandle4xx.")
