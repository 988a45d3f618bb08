"""mx6ctl source remove KIND SOURCE: drop a whole source (a feed, an old import)."""
from __future__ import annotations

import sys

from .common import load, open_store, source_name
from .import_export import IMPORT_KINDS


def cmd_source(args) -> int:
    """Exit 0, or 1 when KIND has no source of that name (nothing removed)."""
    store = open_store(load(args))
    removed, listed = store.remove_source(IMPORT_KINDS[args.kind].store_kind, args.source)
    if not listed and not removed:
        known = ", ".join(sorted(store.sources(IMPORT_KINDS[args.kind].store_kind))) or "none"
        print(f"mx6ctl: {args.kind} has no source {args.source} (its sources: {known})",
              file=sys.stderr)
        return 1
    print(f"removed source {args.source} of {args.kind}: {removed} entries")
    return 0


def register(sub) -> None:
    p = sub.add_parser("source", help="remove a whole source of entries",
                       description="Remove every entry of one source of KIND, and the source "
                                   "itself, in one transaction; stats no longer lists it. The "
                                   "other sources are untouched.",
                       examples=("mx6ctl source remove ip feed-2025",
                                 "mx6ctl source remove addressbook carddav"))
    p.add_argument("action", choices=("remove",), help="what to do with the source")
    p.add_argument("kind", choices=tuple(IMPORT_KINDS), help="the kind of entries")
    p.add_argument("source", type=source_name, metavar="SOURCE",
                   help="the source name, as stats shows it")
    p.set_defaults(func=cmd_source)
