"""Registrar and RDAP signals of the greenlist: parsing and judging, no I/O.

RDAP (RFC 9082/9083) answers are read here; ``rdap_fetch.py`` fetches them in
the background and caches what is read in Redis, where the decision finds it
(``Store.lookup``, kind ``rdap``). Two signals, for the registered domain of
the authenticated (aligned) From domain and for the client's network:

``registrar``  the domain's registrar (the IANA Registrar ID in the
               ``publicIds`` of the entity with role ``registrar``) is on the
               operator's list (``mx6ctl registrar add IANA_ID``)
``rdap``       the domain was registered (event ``registration``) more than
               ``rdap_min_age`` ago, its registrant is neither redacted nor a
               privacy proxy, and the client's RIR network names an abuse
               contact (an entity with role ``abuse`` that has an e-mail
               address or a telephone number)

Cached values (each ends in its expiry, Unix seconds, like every value here)::

    domain  "IANA_ID REGISTERED REGISTRANT EXPIRES"   "-" for an unknown number;
            REGISTRANT is public, redacted or absent; "- - notfound EXPIRES"
            when the registry has no record (or no RDAP server is known)
    ip      "ABUSE EXPIRES"   ABUSE is yes, no or notfound; cached under the
            network's prefix (prefixes.ip_field), found by the longest match

Everything parsed comes from the network: every walk is bounded, every field
checked, and a malformed answer is an ``RdapError``, never a crash.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import re
from dataclasses import dataclass

from ..model import Finding
from ..prefixes import field_to_network, ip_field

DAY = 86400
MAX_ENTITIES = 200          # entities visited in one answer, nested ones included
MAX_DEPTH = 4               # entity nesting followed (ARIN: org -> abuse contact)
MAX_NETWORKS = 16           # CIDR blocks taken from one IP network answer
MIN_NETWORK_LENGTH = 20     # shorter "networks" are registry blocks, not an operator's
PRIVACY = re.compile(r"redact|privacy|proxy|withheld|protected|not ?disclosed|whoisguard|"
                     r"gdpr|masked|hidden|anonymi[sz]", re.IGNORECASE)
REGISTRANT_STATES = ("public", "redacted", "absent")


class RdapError(ValueError):
    """An answer that cannot be read as RDAP."""


@dataclass(frozen=True)
class DomainRecord:
    registrar_id: int | None        # IANA Registrar ID
    registered: int | None          # Unix seconds of the registration event
    registrant: str                 # public, redacted or absent

    def value(self, expires: int) -> str:
        return (f"{self.registrar_id or '-'} {self.registered if self.registered is not None else '-'} "
                f"{self.registrant} {expires}")

    @classmethod
    def from_value(cls, value: str) -> DomainRecord | None:
        """None for a "notfound" value; raises ValueError on garbage."""
        regid, registered, registrant, _expires = value.split(" ")
        if registrant == "notfound":
            return None
        if registrant not in REGISTRANT_STATES:
            raise ValueError(f"unknown registrant state {registrant!r}")
        return cls(None if regid == "-" else int(regid),
                   None if registered == "-" else int(registered), registrant)


def notfound_value(expires: int) -> str:
    return f"- - notfound {expires}"


@dataclass(frozen=True)
class NetworkRecord:
    networks: tuple                 # IPv6Network blocks of the RIR's network object
    abuse: bool                     # names an abuse contact


# --- reading answers -----------------------------------------------------------------------


def load_json(body: bytes) -> dict:
    """An RDAP answer's top-level object."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise RdapError(f"not JSON: {str(err)[:80]}") from None
    if not isinstance(data, dict):
        raise RdapError("not a JSON object")
    return data


def _entities(data: dict):
    """Every entity of an answer, nested ones too, (entity, roles); bounded."""
    seen = 0
    stack = [(e, 1) for e in _list(data.get("entities"))]
    while stack and seen < MAX_ENTITIES:
        entity, depth = stack.pop(0)
        if not isinstance(entity, dict):
            continue
        seen += 1
        roles = {r.lower() for r in _list(entity.get("roles")) if isinstance(r, str)}
        yield entity, roles
        if depth < MAX_DEPTH:
            stack.extend((e, depth + 1) for e in _list(entity.get("entities")))


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _vcard(entity: dict) -> dict:
    """vcardArray properties as name -> [text values] (jCard, RFC 7095); junk skipped."""
    card = _list(entity.get("vcardArray"))
    props: dict = {}
    if len(card) != 2 or card[0] != "vcard":
        return props
    for prop in _list(card[1])[:100]:
        if isinstance(prop, list) and len(prop) >= 4 and isinstance(prop[0], str):
            values = [v for v in prop[3:] if isinstance(v, str)]
            values += [x for v in prop[3:] if isinstance(v, list) for x in v if isinstance(x, str)]
            props.setdefault(prop[0].lower(), []).extend(values)
    return props


def registrar_id(data: dict) -> int | None:
    for entity, roles in _entities(data):
        if "registrar" not in roles:
            continue
        for public_id in _list(entity.get("publicIds")):
            if not isinstance(public_id, dict):
                continue
            kind = public_id.get("type")
            ident = public_id.get("identifier")
            if isinstance(kind, str) and "iana" in kind.lower() and \
                    isinstance(ident, (str, int)) and not isinstance(ident, bool):
                text = str(ident).strip()
                if text.isascii() and text.isdigit() and 0 < len(text) <= 10 and int(text) > 0:
                    return int(text)
    return None


def registration_time(data: dict) -> int | None:
    for event in _list(data.get("events"))[:50]:
        if isinstance(event, dict) and event.get("eventAction") == "registration":
            return parse_time(event.get("eventDate"))
    return None


def parse_time(text) -> int | None:
    """RFC 3339 date-time to Unix seconds; None if it is not one."""
    if not isinstance(text, str) or len(text) > 40 or not text.isascii():
        return None
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    try:
        return int(when.timestamp())
    except (OverflowError, OSError, ValueError):
        return None


def registrant_state(data: dict) -> str:
    """public: a registrant with a name or organisation that is not a privacy service;
    redacted: RFC 9537 redactions of it, remarks saying so, or a privacy proxy's name;
    absent: no registrant entity in the answer."""
    for item in _list(data.get("redacted"))[:50]:
        name = item.get("name") if isinstance(item, dict) else None
        text = name.get("description", "") if isinstance(name, dict) else ""
        if isinstance(text, str) and "registrant" in text.lower():
            return "redacted"
    states = [_entity_state(e) for e, roles in _entities(data) if "registrant" in roles]
    if not states:
        return "absent"
    return "public" if "public" in states else "redacted"


def _entity_state(entity: dict) -> str:
    for remark in _list(entity.get("remarks"))[:20]:
        if isinstance(remark, dict):
            words = [remark.get("title")] + _list(remark.get("description"))
            if any(isinstance(w, str) and PRIVACY.search(w) for w in words):
                return "redacted"
    card = _vcard(entity)
    names = [n.strip() for n in card.get("fn", []) + card.get("org", []) if n.strip()]
    if not names or any(PRIVACY.search(n) for n in names):
        return "redacted"
    return "public"


def parse_domain(data: dict) -> DomainRecord:
    if data.get("objectClassName") not in (None, "domain"):
        raise RdapError(f"not a domain object: {str(data.get('objectClassName'))[:40]!r}")
    return DomainRecord(registrar_id(data), registration_time(data), registrant_state(data))


def parse_network(data: dict) -> NetworkRecord:
    if data.get("objectClassName") not in (None, "ip network"):
        raise RdapError(f"not an ip network object: {str(data.get('objectClassName'))[:40]!r}")
    abuse = any("abuse" in roles and (_vcard(e).get("email") or _vcard(e).get("tel"))
                for e, roles in _entities(data))
    return NetworkRecord(network_blocks(data), abuse)


def network_blocks(data: dict) -> tuple:
    blocks = []
    for cidr in _list(data.get("cidr0_cidrs"))[:MAX_NETWORKS]:
        if isinstance(cidr, dict) and isinstance(cidr.get("v6prefix"), str):
            try:
                blocks.append(ipaddress.IPv6Network(f"{cidr['v6prefix']}/{int(cidr.get('length'))}"))
            except (ValueError, TypeError):
                continue
    if not blocks:
        try:
            start = ipaddress.IPv6Address(str(data.get("startAddress")))
            end = ipaddress.IPv6Address(str(data.get("endAddress")))
            for block in ipaddress.summarize_address_range(start, end):
                blocks.append(block)
                if len(blocks) >= MAX_NETWORKS:
                    break
        except (ValueError, TypeError):
            pass
    return tuple(blocks)


def network_field(record: NetworkRecord | None, address: ipaddress.IPv6Address) -> str:
    """The prefix a network answer is cached under: the smallest of its blocks holding
    the client, unless that is a registry-sized block; else the client's /64."""
    holding = [b for b in (record.networks if record else ()) if address in b
               and b.prefixlen >= MIN_NETWORK_LENGTH]
    if holding:
        return ip_field(max(holding, key=lambda b: b.prefixlen))
    return ip_field(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


def network_value(record: NetworkRecord | None, address: ipaddress.IPv6Address,
                  expires: int) -> str:
    if record is None:
        return f"notfound {expires}"
    usable = any(address in b and b.prefixlen >= MIN_NETWORK_LENGTH for b in record.networks)
    return f"{'yes' if record.abuse and usable else 'no'} {expires}"


def related_url(data: dict) -> str:
    """The registrar's own RDAP record of the domain (a thin registry such as .com keeps
    the registrant there): the first link rel=related of type application/rdap+json."""
    for link in _list(data.get("links"))[:50]:
        if isinstance(link, dict) and link.get("rel") == "related" and \
                link.get("type") == "application/rdap+json" and isinstance(link.get("href"), str):
            href = link["href"]
            if re.fullmatch(r"https?://[\x21-\x7e]{1,2000}", href):
                return href
    return ""


# --- bootstrap (RFC 9224) -------------------------------------------------------------------


class Bootstrap:
    """An IANA bootstrap registry: dns.json (domains) or ipv6.json (IPv6 networks)."""

    def __init__(self, entries: list, kind: str):
        self.kind = kind
        self.entries = entries      # (label suffix or IPv6Network, base URL)

    @classmethod
    def parse(cls, body: bytes, kind: str) -> Bootstrap:
        data = load_json(body)
        entries = []
        for service in _list(data.get("services")):
            if not (isinstance(service, list) and len(service) == 2):
                raise RdapError("a service is not [[keys], [urls]]")
            keys, urls = _list(service[0]), [u for u in _list(service[1]) if isinstance(u, str)
                                              and re.fullmatch(r"https?://[\x21-\x7e]+", u)]
            if not urls:
                continue
            url = next((u for u in urls if u.startswith("https:")), urls[0])   # https first
            url = url if url.endswith("/") else url + "/"
            for key in keys:
                if not isinstance(key, str):
                    raise RdapError(f"bootstrap key {key!r} is not a string")
                entries.append((cls._key(key, kind), url))
        if not entries:
            raise RdapError("no services")
        return cls(entries, kind)

    @staticmethod
    def _key(key: str, kind: str):
        if kind == "ip":
            try:
                return ipaddress.IPv6Network(key.strip())
            except ValueError:
                raise RdapError(f"bootstrap key {key!r} is not an IPv6 prefix") from None
        return key.strip().strip(".").lower()

    def base_url(self, name) -> str:
        """The server for a domain (longest label-suffix match) or an IPv6Address
        (longest prefix); "" when the registry names none."""
        best, best_len = "", -1
        for key, url in self.entries:
            if self.kind == "ip":
                if name in key and key.prefixlen > best_len:
                    best, best_len = url, key.prefixlen
            elif (name == key or name.endswith("." + key)) and len(key) > best_len:
                best, best_len = url, len(key)
        return best

    def url(self, name) -> str:
        base = self.base_url(name)
        if not base:
            return ""
        return base + ("ip/" if self.kind == "ip" else "domain/") + str(name)


# --- the signals, from the cached values -----------------------------------------------------


def _domain_hit(hits: list, domain: str):
    return next((h for h in hits if h.source == "domain" and h.key == domain), None)


def _network_hit(hits: list):
    nets = [h for h in hits if h.source == "ip" and h.key == "" and "/" in h.field]
    return max(nets, key=lambda h: int(h.field.split("/")[1])) if nets else None


def read_domain(hit) -> tuple:
    """(DomainRecord or None, problem): problem is "" when the record is usable."""
    try:
        record = DomainRecord.from_value(hit.value)
    except ValueError:
        return None, "unreadable cache entry"
    return record, "" if record else "no RDAP record"


def judge_registrar(hits: list, domain: str) -> Finding:
    hit = _domain_hit(hits, domain)
    if hit is None:
        return Finding("registrar", "pending", f"{domain} lookup queued")
    record, problem = read_domain(hit)
    if record is None:
        return Finding("registrar", "unknown", f"{domain} {problem}")
    if record.registrar_id is None:
        return Finding("registrar", "unknown", f"{domain} no IANA Registrar ID")
    listed = sorted(h.source for h in hits if h.key == "registrar"
                    and h.field == str(record.registrar_id))
    if listed:
        return Finding("registrar", "pass", f"{domain} iana={record.registrar_id} source={listed[0]}")
    return Finding("registrar", "unlisted", f"{domain} iana={record.registrar_id}")


def judge_rdap(hits: list, domain: str, min_age: int, now: float) -> Finding:
    hit, net = _domain_hit(hits, domain), _network_hit(hits)
    if hit is None or net is None:
        waiting = " and ".join(w for w, h in (("domain", hit), ("network", net)) if h is None)
        return Finding("rdap", "pending", f"{domain} {waiting} lookup queued")
    record, problem = read_domain(hit)
    if record is None:
        return Finding("rdap", "unknown", f"{domain} {problem}")
    if record.registered is None:
        return Finding("rdap", "fail", f"{domain} no registration date")
    age = int((now - record.registered) // DAY)
    network = field_to_network(net.field)
    if age * DAY < min_age:
        return Finding("rdap", "fail", f"{domain} registered {age}d ago, needs {min_age // DAY}d")
    if record.registrant != "public":
        return Finding("rdap", "fail", f"{domain} registrant={record.registrant}")
    abuse = net.value.split(" ", 1)[0]
    if abuse != "yes":
        return Finding("rdap", "fail", f"{domain} network={network} abuse={abuse}")
    return Finding("rdap", "pass", f"{domain} age={age}d registrant=public network={network} "
                                   "abuse=yes")
