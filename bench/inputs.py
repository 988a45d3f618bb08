"""Everything the benchmark sends, built fresh each run.

DKIM keys (openssl), zone files for the DNS server, DKIM-signed ~4 KB
messages for four kinds of client, and the Redis entries that make two of
them whitelisted. The four kinds, each with its own client address:

========== ===================== ===================================== =========
kind       client                sender                                verdict
========== ===================== ===================================== =========
ip         2001:db8:b6::10       alice@partner.example (IP whitelist)  accept
addrbook   2001:db8:b7::10       bob@friend.example (in addressbook)   accept
unknown    2001:db8:b9::10       carol@stranger.example                451
ipv4       127.0.0.1             dave@legacy.example                   untouched
========== ===================== ===================================== =========

Every sender domain publishes SPF for its client address, a DKIM key and a
DMARC record, so every IPv6 message costs SPF + DKIM + DMARC work.
"""
from __future__ import annotations

import base64
import email.utils
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.reversename

SELECTOR = "bench"
RECIPIENT = "user@example.org"
AUTHSERV_ID = "mx.example.org"


@dataclass(frozen=True)
class Kind:
    name: str
    client: str          # the address Postfix sees (a loopback address we add)
    sender: str
    expected: str        # what mx6milter does with it

    @property
    def domain(self) -> str:
        return self.sender.split("@", 1)[1]


KINDS = (
    Kind("ip", "2001:db8:b6::10", "alice@partner.example", "accept"),
    Kind("addrbook", "2001:db8:b7::10", "bob@friend.example", "accept"),
    Kind("unknown", "2001:db8:b9::10", "carol@stranger.example", "tempfail"),
    Kind("ipv4", "127.0.0.1", "dave@legacy.example", "accept"),
)
# Distinct sender domains for the cold-cache runs: n.cold.example, selector cN.
COLD_DOMAIN = "cold.example"
COLD_CLIENT = "2001:db8:b9::20"
REVERSE_ZONE = "8.b.d.0.1.0.0.2.ip6.arpa"


def make_rsa_key(directory: Path, name: str, bits: int = 2048) -> tuple:
    """(private PEM bytes in PKCS#1, public key base64 for the DNS record)."""
    private = directory / f"{name}.private"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(private), str(bits)],
                   check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return private.read_bytes(), base64.b64encode(der).decode()


def _txt(value: str) -> str:
    """A TXT rdata: long values split into 255-byte strings."""
    return " ".join(f'"{value[i:i + 250]}"' for i in range(0, len(value), 250))


def dkim_record(public_b64: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_b64}"


def zone(domain: str, spf: str, dkim_records: dict, extra: str = "") -> str:
    lines = ["$TTL 3600",
             f"@ IN SOA ns.{domain}. hostmaster.{domain}. 1 3600 600 86400 3600",
             f"@ IN NS ns.{domain}.",
             "ns IN A 127.0.0.1",
             f"@ IN TXT {_txt(spf)}",
             '_dmarc IN TXT "v=DMARC1; p=reject; adkim=r; aspf=r"']
    for name, value in dkim_records.items():
        lines.append(f"{name} IN TXT {_txt(value)}")
    return "\n".join(lines) + "\n" + extra


def message_text(sender: str, subject: str, serial: int = 0, size: int = 4096) -> bytes:
    """A plain, realistic message of about SIZE bytes before signing, CRLF."""
    domain = sender.split("@", 1)[1]
    headers = [
        f"From: {sender.split('@')[0].title()} <{sender}>",
        f"To: User <{RECIPIENT}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(1700000000 + serial)}",
        f"Message-ID: <bench{serial}.{sender.split('@')[0]}@{domain}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    line = "The quick brown fox jumps over the lazy dog; benchmark text follows. 0123456789"
    body = []
    while sum(len(b) + 2 for b in body) + sum(len(h) + 2 for h in headers) < size - 600:
        body.append(line)
    return ("\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(body) + "\r\n").encode()


def sign(raw: bytes, domain: str, selector: str, private_pem: bytes) -> bytes:
    signature = dkim.sign(raw, selector.encode(), domain.encode(), private_pem,
                          canonicalize=(b"relaxed", b"relaxed"),
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + raw


@dataclass
class Inputs:
    directory: Path
    zones: dict                 # origin -> zone text
    messages: dict              # kind name -> signed message bytes (CRLF)
    message_files: dict         # kind name -> file with LF line ends, for smtp-source -F
    public_keys: dict           # "sel._domainkey.domain" -> TXT value (OpenDKIM TestPublicKeys)
    cold_messages: list         # (sender, signed bytes): one sender domain and key name each
    cold_key: tuple = ()

    def kind(self, name: str) -> Kind:
        return next(k for k in KINDS if k.name == name)


def build(directory: Path, cold_count: int = 0) -> Inputs:
    directory.mkdir(parents=True, exist_ok=True)
    zones, messages, files, public = {}, {}, {}, {}
    # One key for all senders: key generation is slow and one key verifies as fast as four.
    private, public_b64 = make_rsa_key(directory, "bench")
    record = dkim_record(public_b64)
    for kind in KINDS:
        address = ipaddress.ip_address(kind.client)
        mechanism = (f"ip6:{ipaddress.ip_network(f'{address}/48', strict=False)}"
                     if address.version == 6 else "ip4:127.0.0.0/8")
        zones[kind.domain] = zone(kind.domain, f"v=spf1 {mechanism} -all",
                                  {f"{SELECTOR}._domainkey": record},
                                  extra=f"mail IN {'AAAA' if address.version == 6 else 'A'} "
                                        f"{kind.client}\n")
        public[f"{SELECTOR}._domainkey.{kind.domain}"] = record
        raw = sign(message_text(kind.sender, f"Benchmark message ({kind.name})"),
                   kind.domain, SELECTOR, private)
        messages[kind.name] = raw
        path = directory / f"{kind.name}.eml"
        path.write_bytes(raw.replace(b"\r\n", b"\n"))
        files[kind.name] = path
    # Reverse DNS: the whitelisted and addressbook clients have forward-confirmed
    # PTR names (as real MTAs do); the unknown ones have none (NXDOMAIN, cacheable).
    reverse = ["$TTL 3600", "@ IN SOA ns.partner.example. hostmaster.partner.example. 1 3600 "
               "600 86400 3600", "@ IN NS ns.partner.example."]
    for kind in KINDS:
        if kind.name in ("ip", "addrbook"):
            name = dns.reversename.from_address(kind.client).to_text()
            reverse.append(f"{name} IN PTR mail.{kind.domain}.")
    zones[REVERSE_ZONE] = "\n".join(reverse) + "\n"
    # Cold senders: every message has its own SPF domain, DKIM key name and DMARC
    # lookup, all answered by wildcards, so none of it can come from a cache.
    zones[COLD_DOMAIN] = zone(COLD_DOMAIN, "v=spf1 -all", {"*._domainkey": record},
                              extra='* IN TXT "v=spf1 ip6:2001:db8:b9::/48 -all"\n')
    cold = []
    for n in range(cold_count):
        domain = f"s{n}.{COLD_DOMAIN}"
        sender = f"erin@{domain}"
        # d= is the parent (relaxed-aligned with the From domain), so the key name
        # cN._domainkey.cold.example is answered by the *._domainkey wildcard.
        raw = sign(message_text(sender, "Benchmark message (cold)", n), COLD_DOMAIN, f"c{n}",
                   private)
        cold.append((sender, raw))
    with open(directory / "testkeys", "w") as handle:
        for name, value in public.items():
            handle.write(f"{name} {value}\n")
    return Inputs(directory, zones, messages, files, public, cold)


def seed_redis(store, extra_ips: int = 10000, extra_pairs: int = 10000) -> None:
    """The whitelist entries two of the kinds match, among some unrelated ones."""
    from mx6milter.prefixes import ip_field
    ip_kind = next(k for k in KINDS if k.name == "ip")
    book = next(k for k in KINDS if k.name == "addrbook")
    net = ipaddress.ip_network(f"{ip_kind.client}/48", strict=False)
    entries = [("", ip_field(net), "0")]
    base = int(ipaddress.ip_address("2001:db8:1000::"))
    entries += [("", ip_field(ipaddress.IPv6Network((base + (i << 64), 64))), "0")
                for i in range(extra_ips)]
    store.add("ip", "local", entries)
    pairs = [(RECIPIENT, book.sender, "0")]
    pairs += [(f"u{i % 1000}@example.org", f"contact{i}@elsewhere.example", "0")
              for i in range(extra_pairs)]
    store.add("ab", "local", pairs)
