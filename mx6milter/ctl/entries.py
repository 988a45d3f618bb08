"""mx6ctl ip|domain|addressbook add|remove|list, and stats."""
from __future__ import annotations

import json

from .common import (UsageError, add_expires_option, add_source_option, address_ids, load,
                         note, now, open_store, parse_all, parse_expires, public_suffix_test)
from ..entries import REQUIREMENTS, LineParser, format_expiry, value_expiry, value_requirement
from ..store import KINDS
from ..prefixes import field_to_network

ACTION_HELP = "add entries, remove them, or list them (with source and expiry)"
SOURCE_HELP = "source of the entries (add: default local; remove, list: default every source)"


def _describe(hit, clock: float) -> str:
    expires = value_expiry(hit.value)
    text = f"source={hit.source}\texpires={format_expiry(expires)}"
    return text + ("\t(expired)" if expires and expires <= clock else "")


def _report_added(result, source: str) -> None:
    print(f"added {result.added} new, {result.present + result.repeated} already present "
          f"(value updated) in source {source}")


def _report_removed(count: int, asked: int, source) -> None:
    where = f"source {source}" if source else "any source"
    missing = f"; {asked - count} not found in {where}" if count < asked else ""
    print(f"removed {count}{missing}")


# --- ip and domain -------------------------------------------------------------------


def cmd_ip(args) -> int:
    parser = LineParser("ip", now())
    return edit_entries(args, "ip", args.prefixes, "PREFIX",
                        lambda text, expires: parser.entry(text, expires=expires),
                        lambda hit: str(field_to_network(hit.field)))


def cmd_domain(args) -> int:
    parser = LineParser("domain", now(), is_public=public_suffix_test(args),
                        default_requirement=args.require)
    return edit_entries(args, "domain", args.domains, "DOMAIN",
                        lambda text, expires: parser.entry(text, expires=expires),
                        lambda hit: f"{hit.field}\trequire={value_requirement(hit.value)}")


def edit_entries(args, kind: str, texts: list, metavar: str, make_entry, show) -> int:
    """``KIND add|remove|list`` of a list keyed by one word (the greenlist's lists too):
    ``make_entry(text, expires)`` gives an Entry or raises EntryError, ``show(hit)``
    what ``list`` prints of an entry before its source and expiry."""
    config = load(args)
    if args.action == "list":
        if texts:
            raise UsageError(f"{kind} list takes no {metavar}")
        store = open_store(config)
        clock = now()
        for hit in store.entries(kind, args.source):
            print(f"{show(hit)}\t{_describe(hit, clock)}")
        return 0
    if not texts:
        raise UsageError(f"{kind} {args.action}: give at least one {metavar}")
    expires = parse_expires(args.expires) if args.action == "add" else 0
    entries = parse_all(texts, lambda text: make_entry(text, expires))
    for entry in entries:
        if entry.note:
            note(entry.note)
    store = open_store(config)
    if args.action == "add":
        source = args.source or "local"
        _report_added(store.load(kind, source, [e.triple() for e in entries]), source)
    else:
        count = store.remove(kind, args.source, [(e.suffix, e.field) for e in entries])
        _report_removed(count, len(entries), args.source)
    return 0


def register_ip(sub) -> None:
    p = sub.add_parser("ip", help="the IPv6 address and prefix whitelist",
                       description="Add, remove or list whitelisted IPv6 addresses and prefixes.",
                       examples=("mx6ctl ip add 2001:db8:25::/48 --expires 90d",
                                 "mx6ctl ip list --source local"))
    p.add_argument("action", choices=("add", "remove", "list"), help=ACTION_HELP)
    p.add_argument("prefixes", nargs="*", metavar="PREFIX",
                   help="IPv6 address or prefix, e.g. 2001:db8::25 or 2001:db8:1::/48")
    add_source_option(p, SOURCE_HELP)
    add_expires_option(p)
    p.set_defaults(func=cmd_ip)


def register_domain(sub) -> None:
    p = sub.add_parser("domain", help="the whitelist of authenticated domains",
                       description="Add, remove or list whitelisted domains. An entry covers the "
                                   "domain and its subdomains, once they authenticate as required.",
                       examples=("mx6ctl domain add partner.example",
                                 "mx6ctl domain add lists.example.org --require dkim"))
    p.add_argument("action", choices=("add", "remove", "list"), help=ACTION_HELP)
    p.add_argument("domains", nargs="*", metavar="DOMAIN",
                   help="domain, e.g. partner.example (Unicode and a trailing dot are normalised)")
    p.add_argument("--require", choices=REQUIREMENTS, default="dmarc",
                   help="what must authenticate: dmarc (default: DMARC pass, i.e. an aligned SPF "
                        "or DKIM pass for the From domain), dkim (a DKIM signature d=DOMAIN), "
                        "spf (SPF pass of MAIL FROM, or HELO for <>), any (one of these)")
    add_source_option(p, SOURCE_HELP)
    add_expires_option(p)
    p.set_defaults(func=cmd_domain)


# --- addressbook ---------------------------------------------------------------------


def cmd_addressbook(args) -> int:
    config = load(args)
    store = open_store(config)
    ids = address_ids(config, store)
    if ids.private and args.action == "list":
        note("[addressbook] secret_file is set: the addressbook holds keyed hashes of the "
             "addresses, so only hashes (hmac:...) can be shown")
    recipient = parse_all([args.recipient], ids)[0] if args.recipient else None
    senders = parse_all(args.senders, ids)
    if args.action == "list":
        return _list_addressbook(store, ids, args.source, recipient, senders)
    if recipient is None:
        raise UsageError(f"addressbook {args.action}: give RECIPIENT and SENDER ...")
    if args.action == "add":
        if not senders:
            raise UsageError("addressbook add: give at least one SENDER")
        source = args.source or "local"
        expires = parse_expires(args.expires)
        _report_added(store.load("ab", source, [(recipient, s, str(expires)) for s in senders]),
                      source)
        return 0
    if args.all:
        if senders:
            raise UsageError("addressbook remove --all takes no SENDER")
        count = store.remove_keys("ab", args.source, [recipient])
        print(f"removed {count} (the whole addressbook of {args.recipient})")
        return 0
    if not senders:
        raise UsageError("addressbook remove: give SENDER ..., or --all for the whole addressbook")
    _report_removed(store.remove("ab", args.source, [(recipient, s) for s in senders]),
                    len(senders), args.source)
    return 0


def _list_addressbook(store, ids, source, recipient, senders) -> int:
    clock = now()
    if senders:   # membership: works in privacy mode too
        hits = {}
        for hit in store.entries("ab", source, recipient):
            hits.setdefault(hit.field, []).append(hit)
        for sender in senders:
            found = hits.get(sender)
            status = "\t".join(f"in addressbook\t{_describe(h, clock)}" for h in found) \
                if found else "not in addressbook"
            print(f"{ids.show(sender)}\t{status}")
        return 0
    for hit in store.entries("ab", source, recipient):
        print(f"{ids.show(hit.key)}\t{ids.show(hit.field)}\t{_describe(hit, clock)}")
    return 0


def register_addressbook(sub) -> None:
    p = sub.add_parser("addressbook", help="recipients' addressbooks",
                       description="Add, remove or list the senders a recipient knows. A "
                                   "message is whitelisted when its From address is in the "
                                   "addressbook of every recipient and its domain authenticated.",
                       examples=("mx6ctl addressbook add alice@example.org bob@partner.example",
                                 "mx6ctl addressbook remove alice@example.org --all"))
    p.add_argument("action", choices=("add", "remove", "list"), help=ACTION_HELP)
    p.add_argument("recipient", nargs="?", metavar="RECIPIENT",
                   help="the local recipient (list: optional, default every recipient)")
    p.add_argument("senders", nargs="*", metavar="SENDER",
                   help="addresses the recipient knows (list: show whether these are known)")
    p.add_argument("--all", action="store_true",
                   help="remove: the recipient's whole addressbook")
    add_source_option(p, SOURCE_HELP)
    add_expires_option(p)
    p.set_defaults(func=cmd_addressbook)


# --- stats ---------------------------------------------------------------------------


def cmd_stats(args) -> int:
    config = load(args)
    store = open_store(config)
    rows = []
    for kind in KINDS:             # the greenlist's kinds too; kinds without sources add no row
        name = "addressbook" if kind == "ab" else kind
        for source, (keys, entries) in store.stats(kind).items():
            row = {"kind": name, "source": source, "entries": entries}
            if kind == "ab":
                row["recipients"] = keys
            rows.append(row)
    memory = store.used_memory()
    summary = {"entries": rows, "redis_used_memory": memory,
               "addressbook_hashed": store.addressbook_secret is not None}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    print(f"{'kind':<12} {'source':<24} {'entries':>10} {'recipients':>10}")
    for row in rows:
        print(f"{row['kind']:<12} {row['source']:<24} {row['entries']:>10} "
              f"{row.get('recipients', ''):>10}")
    if not rows:
        print("(no entries)")
    if memory is not None:
        print(f"redis used_memory: {memory / 1048576:.1f} MiB")
    if summary["addressbook_hashed"]:
        print("addressbook: keyed hashes (privacy mode)")
    return 0


def register_stats(sub) -> None:
    p = sub.add_parser("stats", help="number of entries per kind and source",
                       description="Count the entries of each kind and source, and show the "
                                   "memory Redis uses.",
                       examples=("mx6ctl stats", "mx6ctl stats --json"))
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(func=cmd_stats)
