"""The fuzz targets: each takes arbitrary bytes, feeds one parser of hostile input,
and checks what must hold of its answer. A target raises only when a property
breaks (AssertionError) or the parser fails in a way it must not (any exception
other than the parser's documented error).

No atheris here: ``Bytes`` splits the input itself, so the unit tests can run
every target on hypothesis' bytes and the harness (``bench/fuzz/run.py``) on
libFuzzer's.
"""
from __future__ import annotations

import ipaddress
import re

import authres
import spf

from mx6milter import vcard
from mx6milter.addresses import (AddressError, domain_to_ascii, from_addresses, normalise_address,
                                 split_address, strip_brackets)
from mx6milter.ctl.import_export import parse_csv
from mx6milter.entries import (AddressIds, EntryError, LineParser, format_line, parse_expiry,
                               split_line)
from mx6milter.evidence.auth import (AuthOutcome, DkimResult, DmarcResult, SpfResult,
                                     claims_authserv_id, dkim_key_problem, render_auth_results,
                                     rsa_public_numbers, single_from_address)
from mx6milter.evidence import arc, dnswl, rdap
from mx6milter.evidence.dmarc_record import is_dmarc_record, parse_record
from mx6milter.policy import parse_client_ip
from mx6milter.prefixes import field_to_network, ip_candidates, ip_field
from mx6milter.reply import build_reply

NOW = 1_800_000_000
OURS = "mx.example.org"
UNDOUBLED_PERCENT = re.compile(r"(?<!%)%(%%)*(?!%)")
LIBMILTER_MAX_LINES = 32


class Bytes:
    """Values taken one after another from the front of the input."""

    def __init__(self, data: bytes):
        self.data = data

    def byte(self) -> int:
        value, self.data = (self.data[0] if self.data else 0), self.data[1:]
        return value

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def raw(self, limit: int = 1 << 16) -> bytes:
        """Up to LIMIT bytes: a two-byte length, then that many (or what is left)."""
        size = (self.byte() << 8 | self.byte()) % (limit + 1)
        value, self.data = self.data[:size], self.data[size:]
        return value

    def text(self, limit: int = 1 << 16) -> str:
        """Text as the milter decodes what it receives: undecodable bytes become lone
        surrogates (surrogateescape), so every str a parser may meet can occur."""
        return self.raw(limit).decode("utf-8", "surrogateescape")

    def rest_text(self) -> str:
        value, self.data = self.data.decode("utf-8", "surrogateescape"), b""
        return value


def addresses(data: bytes) -> None:
    take = Bytes(data)
    fold, underscore, text = take.flag(), take.flag(), take.rest_text()
    try:
        address = normalise_address(text, fold)
    except AddressError:
        pass
    else:
        assert normalise_address(address, fold) == address
        local, domain = split_address(address)
        assert domain == domain_to_ascii(domain) and 0 < len(local) <= 64
    try:
        domain = domain_to_ascii(text, underscore)
    except AddressError:
        pass
    else:
        assert domain.isascii() and domain == domain.lower() and len(domain) <= 253
        assert domain_to_ascii(domain, underscore) == domain
    assert strip_brackets("<" + text + ">") == text


def client_address(data: bytes) -> None:
    address = parse_client_ip(data.decode("utf-8", "surrogateescape"))
    assert address is None or isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address))


def from_header(data: bytes) -> None:
    take = Bytes(data)
    values = [take.text(4096) for _ in range(take.byte() % 4)]
    found = from_addresses(values)
    assert found is None or all(found)
    address, problem = single_from_address(values)
    assert bool(address) != bool(problem)


def authres_claims(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    assert claims_authserv_id(text, OURS) in (True, False)
    # our own id, however the rest looks, is always claimed
    assert claims_authserv_id(f" {OURS}; " + text, OURS)


_RESULTS = ("pass", "fail", "none", "neutral", "softfail", "temperror", "permerror", "policy")


def authres_render(data: bytes) -> None:
    take = Bytes(data)
    spf_result, dkim_result = _RESULTS[take.byte() % 8], _RESULTS[take.byte() % 8]
    scope = "helo" if take.flag() else "mailfrom"
    signatures = tuple(DkimResult(dkim_result, take.text(300), take.text(100), take.text(40),
                                  take.text(300)) for _ in range(take.byte() % 13))
    outcome = AuthOutcome(spf=SpfResult(spf_result, take.text(300), scope, take.text(600),
                                        take.text(300)),
                          dkim=signatures,
                          dmarc=DmarcResult("fail", take.text(300), "none", reason=take.text(300)))
    value = render_auth_results(OURS, outcome)
    assert "\r" not in value and "\n" not in value
    parsed = authres.AuthenticationResultsHeader.parse_value(value)
    assert parsed.authserv_id == OURS
    methods = [r.method for r in parsed.results]
    assert methods[0] == "spf" and methods[-1] == "dmarc"
    assert claims_authserv_id(value, OURS)


def dmarc_record(data: bytes) -> None:
    text = data if data[:1] == b"\x00" else data.decode("utf-8", "surrogateescape")
    record = parse_record(text)
    assert record.is_dmarc == is_dmarc_record(text)
    assert record.policy in ("", "none", "quarantine", "reject")
    assert record.subdomain_policy in ("", "none", "quarantine", "reject")
    assert record.adkim in ("r", "s") and record.aspf in ("r", "s") and 0 <= record.pct <= 100
    assert record.usable or not record.policy


_SPF_RESULTS = {"pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"}


def spf_record(data: bytes) -> None:
    """A record as pyspf evaluates it for check_spf; lookups answer temperror (no check runs)."""
    query = spf.query(i="2001:db8::1", s="user@example.org", h="mx.example.org", timeout=1)
    assert query.check(spf=data.decode("utf-8", "surrogateescape"))[0] in _SPF_RESULTS


def dkim_key(data: bytes) -> None:
    assert isinstance(dkim_key_problem(data), str)
    numbers = rsa_public_numbers(data)
    assert numbers is None or (len(numbers) == 2 and all(n >= 0 for n in numbers))


def reply(data: bytes) -> None:
    take = Bytes(data)
    answer = build_reply("451", "4.7.1", take.text(), take.text(), take.text())
    assert 1 <= len(answer.lines) <= LIBMILTER_MAX_LINES
    for line in answer.lines:
        assert all(" " <= ch <= "~" for ch in line) and not UNDOUBLED_PERCENT.search(line)
        assert len(line) <= 500


def _public(domain: str) -> bool:
    return "." not in domain or domain in ("co.uk", "example.com")


def _round_trip(kind: str, parser: LineParser, entry) -> None:
    line = format_line(kind, *entry.triple())
    assert parser.parse(line).triple() == entry.triple(), line


def import_lines(data: bytes) -> None:
    take = Bytes(data)
    kind = ("ip", "domain", "ab")[take.byte() % 3]
    ids = AddressIds(lambda address: address, fold_local_part=take.flag(), private=False)
    parser = LineParser(kind, NOW, ids=ids, is_public=_public)
    line = take.rest_text()
    try:
        words, options = split_line(line)
        entry = parser.parse(line)
    except EntryError:
        return
    if entry is None:
        assert not words and not options
    else:
        _round_trip(kind, parser, entry)


def expiry(data: bytes) -> None:
    try:
        epoch = parse_expiry(data.decode("utf-8", "surrogateescape"), NOW)
    except EntryError:
        return
    assert epoch == 0 or NOW < epoch < 2 ** 40


def csv_lines(data: bytes) -> None:
    ids = AddressIds(lambda address: address, fold_local_part=True, private=False)
    parser = LineParser("ab", NOW, ids=ids)
    lines = data.decode("utf-8", "surrogateescape").splitlines()
    for _number, entry, error in parse_csv(enumerate(lines, 1), parser):
        assert (entry is None) != (error is None)


def vcards(data: bytes) -> None:
    lines = data.decode("utf-8", "surrogateescape").splitlines()
    for event, number, value in vcard.emails(enumerate(lines, 1)):
        assert event in ("email", "error") and 1 <= number <= len(lines)
        assert value if event == "error" else value == value.strip() and value


def dnswl_answer(data: bytes) -> None:
    """A DNS whitelist's A and TXT answers, as the resolver hands them over."""
    take = Bytes(data)
    addresses = [take.text(60) for _ in range(take.byte() % 5)]
    answer = dnswl.classify(addresses)
    assert answer.result in ("listed", "unlisted", "error")
    assert answer.result != "listed" or (answer.address.startswith("127.0.") and answer.trust <= 3)
    assert all(" " <= ch <= "~" for ch in answer.address)
    txt = dnswl.policy_txt([take.raw(300)])
    assert len(txt) <= dnswl.MAX_TXT and not set(txt) & set('"\\;')


def rdap_answer(data: bytes) -> None:
    """An RDAP server's answer body, read as a domain and as an ip network."""
    try:
        answer = rdap.load_json(data)
    except rdap.RdapError:
        return
    for parse in (rdap.parse_domain, rdap.parse_network):
        try:
            parse(answer)
        except rdap.RdapError:
            pass
    assert isinstance(rdap.related_url(answer), str)


def arc_headers(data: bytes) -> None:
    """A message's header block, for the ARC sealer it names (before any verification)."""
    instance, sealer = arc.latest_seal(arc.arc_fields(data))
    assert 0 <= instance <= 10 ** 9 and isinstance(sealer, str)


def prefixes(data: bytes) -> None:
    take = Bytes(data)
    value = int.from_bytes(take.raw(16).ljust(16, b"\x00"), "big")
    length = take.byte() % 129
    network = ipaddress.IPv6Network((value >> (128 - length) << (128 - length) if length else 0,
                                     length))
    assert field_to_network(ip_field(network)) == network
    assert ip_field(network) in ip_candidates(network.network_address)
    text = take.rest_text()
    try:
        parsed = field_to_network(text)
    except ValueError:
        return
    assert isinstance(parsed, ipaddress.IPv6Network)


TARGETS = {f.__name__: f for f in (addresses, client_address, from_header, authres_claims,
                                   authres_render, dmarc_record, spf_record, dkim_key, reply,
                                   import_lines, expiry, csv_lines, vcards, dnswl_answer,
                                   rdap_answer, arc_headers, prefixes)}
