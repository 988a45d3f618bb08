"""mx6ctl registrar add|remove|list [IANA_ID ...]: the stringent registrars.

The greenlist's ``registrar`` signal passes when the registrar of the
authenticated From domain (its IANA Registrar ID, read over RDAP) is listed
here (Redis kind ``registrar``, a hash per source like the other lists)."""
from __future__ import annotations

import re

from .common import add_expires_option, add_source_option
from .entries import ACTION_HELP, edit_entries
from ..entries import Entry, EntryError

_IANA_ID = re.compile(r"(?:iana:)?(\d{1,10})", re.IGNORECASE)


def parse_iana_id(text: str) -> str:
    """'292' or 'IANA:292' -> '292'; the RDAP publicIds identifier, a positive number."""
    m = _IANA_ID.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise EntryError(f"{text!r}: expected an IANA Registrar ID, a number such as 292")
    return str(int(m.group(1)))


def cmd_registrar(args) -> int:
    return edit_entries(args, "registrar", args.ids, "IANA_ID",
                        lambda text, expires: Entry("", parse_iana_id(text), str(expires)),
                        lambda hit: f"iana={hit.field}")


def register(sub) -> None:
    text = ("registrars known to be stringent: the greenlist's registrar signal passes when "
            "the authenticated From domain's registrar (over RDAP) is listed")
    p = sub.add_parser("registrar", help="the stringent registrars (greenlist, RDAP)",
                       description=text[:1].upper() + text[1:] + ". See [rdap] in "
                                   "mx6milter.conf(5).",
                       examples=("mx6ctl registrar add 292", "mx6ctl registrar list"))
    p.add_argument("action", choices=("add", "remove", "list"), help=ACTION_HELP)
    p.add_argument("ids", nargs="*", metavar="IANA_ID",
                   help="IANA Registrar ID, as in RDAP's publicIds (e.g. 292)")
    add_source_option(p, "source of the entries (add: default local; remove, list: every source)")
    add_expires_option(p)
    p.set_defaults(func=cmd_registrar)
