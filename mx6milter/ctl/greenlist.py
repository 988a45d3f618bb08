"""mx6ctl for the greenlist (greenlist.py): its lists, the prefix-to-ASN table, the history.

    mx6ctl green add|remove|list [PREFIX ...]               greenlisted networks
    mx6ctl asnlist add|remove|list [ASN ...]                the ASN greenlist
    mx6ctl mishandle4xx add|remove|list [PREFIX|DOMAIN ...] senders that mishandle 4xx
    mx6ctl asn lookup ADDRESS ...                           the table's answer for an address
    mx6ctl history show DOMAIN ...                          a From domain's IPv4 history
    mx6ctl import asn|green|asnlist|mishandle4xx FILE       bulk loads (ctl_import's
                                                            IMPORT_KINDS, with the parsers here)

``import asn`` reads the common ``prefix<TAB>length<TAB>asn`` format (CAIDA's
pfx2as; ``64500_64501`` or ``64500,64501`` for several origins), takes the
IPv6 lines, skips and counts the IPv4 ones, and always replaces its source:
the table is a snapshot, and a merge would keep withdrawn prefixes. The other
kinds read one entry a line like ``import ip`` (``expires=`` allowed).
"""
from __future__ import annotations

import ipaddress
import re
import sys

from .common import UsageError, add_expires_option, add_source_option, load, now, open_store, \
    public_suffix_test
from .entries import ACTION_HELP, edit_entries
from ..entries import (Entry, EntryError, format_expiry, parse_domain, parse_expiry,
                      parse_ipv6_prefix, split_line, value_expiry)
from ..evidence.greenlist import Greenlist
from ..evidence.history import History
from ..prefixes import field_to_network, ip_field
from ..store import address_query

KINDS = {   # kind -> (what an entry is, help, an example entry)
    "green": ("PREFIX", "greenlisted IPv6 networks: accepted subject to content filtering",
              "2001:db8:70::/48"),
    "asnlist": ("ASN", "the ASN greenlist: networks of these ASNs are greenlisted", "AS64500"),
    "mishandle4xx": ("PREFIX|DOMAIN", "known legitimate senders that mishandle 4xx replies, "
                                      "by network or by (forward-confirmed) PTR domain",
                     "mail.oldsender.example"),
}
MAX_ASN = 2 ** 32 - 1
_ASN = re.compile(r"(?:AS)?([0-9]{1,10})", re.IGNORECASE)
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
            raise EntryError(f"unknown option {min(set(options) - {'expires'})}=; known: expires=")
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
        if not (length.isascii() and length.isdigit()):     # "²" is a digit int() cannot read
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


def export_line(kind: str, field: str, value: str) -> str:
    """The line ``import KIND`` reads back as this entry (``export``)."""
    if kind == "asn":       # the table's own format; import asn gives every line one expiry
        network = field_to_network(field)
        return f"{network.network_address}\t{network.prefixlen}\t{value.split()[0].replace(',', '_')}"
    expires = value_expiry(value)
    return show_field(kind, field) + (f" expires={format_expiry(expires)}" if expires else "")


# --- add, remove, list ---------------------------------------------------------------------


def cmd_entries(args) -> int:
    kind = args.command
    parser = GreenLineParser(kind, now(), is_public=public_suffix_test(args) if kind == "mishandle4xx"
                             else None)
    return edit_entries(args, kind, args.entries, KINDS[kind][0], parser.entry,
                        lambda hit: show_field(kind, hit.field))


# --- asn lookup, history show ----------------------------------------------------------------


def cmd_asn(args) -> int:
    """Exit 0, or 1 when the table is empty (every answer would be a miss)."""
    addresses = []
    for text in args.addresses:
        try:
            addresses.append(ipaddress.IPv6Address(text.strip()))
        except ValueError:
            raise UsageError(f"{text!r}: not an IPv6 address") from None
    store = open_store(load(args))
    if not any(entries for _keys, entries in store.stats("asn").values()):
        print("mx6ctl: the prefix-to-ASN table is empty; load one with: mx6ctl import asn FILE "
              "(prefix<TAB>length<TAB>asn lines, e.g. CAIDA's routeviews-rv6-pfx2as)",
              file=sys.stderr)
        return 1
    for address in addresses:
        hits = store.lookup({"asn": [address_query(address)]})["asn"]
        print(f"{address}\t{Greenlist.asn_finding(hits)}")
    return 0


def cmd_history(args) -> int:
    config = load(args)
    history = History(open_store(config), config.greenlist)
    section = config.greenlist
    if not section.history:
        print(f"mx6ctl: note: history is off ([greenlist] history = no in {args.config}): "
              "nothing is recorded now, and the milter does not use what is shown",
              file=sys.stderr)
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
              f"\t{'qualifies' if qualifies else 'below threshold'}")
    return 0


# --- registration -----------------------------------------------------------------------------


def register(sub) -> None:
    for kind, (metavar, text, example) in KINDS.items():
        p = sub.add_parser(kind, help=text, description=text[:1].upper() + text[1:] + ".",
                           examples=(f"mx6ctl {kind} add {example}", f"mx6ctl {kind} list"))
        p.add_argument("action", choices=("add", "remove", "list"), help=ACTION_HELP)
        p.add_argument("entries", nargs="*", metavar=metavar,
                       help=f"{metavar} entries to add or remove (list: none)")
        add_source_option(p, "source of the entries (add: default local; remove, list: every source)")
        add_expires_option(p)
        p.set_defaults(func=cmd_entries)
    p = sub.add_parser("asn", help="what the prefix-to-ASN table says about an address",
                       description="Look addresses up in the prefix-to-ASN table (longest prefix) "
                                   "and the ASN greenlist. Load the table with: import asn FILE. "
                                   "Exit 0, or 1 when the table is empty.",
                       examples=("mx6ctl asn lookup 2001:db8:71::1",))
    p.add_argument("action", choices=("lookup",), help="look the addresses up")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS", help="IPv6 addresses")
    p.set_defaults(func=cmd_asn)
    p = sub.add_parser("history", help="a From domain's IPv4 history (greenlist)",
                       description="Show what the milter learnt about From domains over IPv4 "
                                   "([greenlist] history); says so when history is off.",
                       examples=("mx6ctl history show partner.example",))
    p.add_argument("action", choices=("show",), help="show the history")
    p.add_argument("domains", nargs="+", metavar="DOMAIN", help="From domains")
    p.set_defaults(func=cmd_history)
