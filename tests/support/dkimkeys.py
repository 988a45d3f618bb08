"""DKIM keys the tests generate, and real signatures made with them (dkimpy).

RSA keys come from ``openssl genrsa`` (PKCS#1 PEM, which dkimpy reads),
Ed25519 keys from pynacl. ``zone_values()`` gives the public halves as
string.Template values for tests/data/zones/*.zone: each is the complete
TXT rdata, already split into quoted strings of at most 255 bytes.
"""
from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass

import dkim
import nacl.signing


def _txt_rdata(text: str) -> str:
    chunks = [text[i:i + 200] for i in range(0, len(text), 200)]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def _rsa_key(bits: int = 2048) -> tuple:
    """(private PEM bytes, public key as DKIM p= base64)."""
    private = subprocess.run(["openssl", "genrsa", "-traditional", str(bits)],
                             check=True, capture_output=True).stdout
    public_der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=private,
                                check=True, capture_output=True).stdout
    return private, base64.b64encode(public_der).decode("ascii")


def _hostile_rsa_key(bits: int) -> str:
    """p= base64 of an RSAPublicKey whose modulus and exponent both have BITS bits."""
    def der(tag: int, body: bytes) -> bytes:
        size = len(body).to_bytes(2, "big")
        return bytes([tag, 0x82]) + size + body

    n = e = (1 << (bits - 1)) | 0xFFFF | 1
    key = der(0x30, der(0x02, b"\x00" + n.to_bytes(bits // 8, "big")) +
              der(0x02, b"\x00" + e.to_bytes(bits // 8, "big")))
    return base64.b64encode(key).decode("ascii")


def _ed25519_key() -> tuple:
    """(private seed as base64 bytes, dkimpy's form; public key as p= base64)."""
    key = nacl.signing.SigningKey.generate()
    return (base64.b64encode(bytes(key)),
            base64.b64encode(bytes(key.verify_key)).decode("ascii"))


def message(from_: str = "Alice <alice@example.com>", to: str = "user@example.org",
            subject: str = "Quarterly figures", body: bytes = b"Hello.\r\n\r\nThe figures.\r\n",
            extra: tuple = ()) -> bytes:
    """A plain RFC 5322 message with CRLF line ends; ``extra`` header lines go on top."""
    lines = [line.encode() if isinstance(line, str) else line for line in extra]
    lines += [b"From: " + from_.encode(), b"To: " + to.encode(),
              b"Subject: " + subject.encode(), b"Date: Mon, 02 Mar 2026 10:00:00 +0000",
              b"Message-ID: <20260302100000.1@example.com>"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


SIGNED_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id")


@dataclass(frozen=True)
class DkimKeys:
    rsa_private: bytes
    rsa_public: str
    ed25519_private: bytes
    ed25519_public: str
    other_rsa_private: bytes     # published nowhere: signatures with it never verify

    @classmethod
    def generate(cls) -> DkimKeys:
        rsa_private, rsa_public = _rsa_key()
        ed_private, ed_public = _ed25519_key()
        other_private, _ = _rsa_key()
        return cls(rsa_private, rsa_public, ed_private, ed_public, other_private)

    def zone_values(self) -> dict:
        return {
            "DKIM_RSA": _txt_rdata(f"v=DKIM1; k=rsa; p={self.rsa_public}"),
            "DKIM_ED25519": _txt_rdata(f"v=DKIM1; k=ed25519; p={self.ed25519_public}"),
            # The red team's keys: verifying with them is seconds of pow() (n and e of
            # 16,384 bits), or a tenth of a second each (n and e of 4,096 bits).
            "DKIM_HOSTILE": _txt_rdata(f"v=DKIM1; k=rsa; p={_hostile_rsa_key(16384)}"),
            "DKIM_BIG_EXPONENT": _txt_rdata(f"v=DKIM1; k=rsa; p={_hostile_rsa_key(4096)}"),
        }

    def sign(self, message: bytes, domain: str, selector: str = "rsa",
             algorithm: str = "rsa", key: bytes | None = None,
             include_headers=SIGNED_HEADERS) -> bytes:
        """The message with a DKIM-Signature header (d=DOMAIN s=SELECTOR) prepended.

        ``algorithm`` is "rsa" (rsa-sha256) or "ed25519" (ed25519-sha256);
        ``key`` overrides the private key (e.g. ``other_rsa_private``).
        """
        if algorithm == "ed25519":
            private, signature_algorithm = key or self.ed25519_private, b"ed25519-sha256"
        else:
            private, signature_algorithm = key or self.rsa_private, b"rsa-sha256"
        header = dkim.sign(message, selector.encode(), domain.encode(), private,
                           include_headers=list(include_headers),
                           signature_algorithm=signature_algorithm, linesep=b"\r\n")
        return header + message


@dataclass(frozen=True)
class ArcSealer:
    """A forwarder that seals with ARC (RFC 8617): its domain, selector and own RSA key.

    ``zone()`` is a zone publishing its key; ``seal()`` passes a
    message on with the forwarder's ARC set on top (dkimpy's arc_sign)."""
    domain: str
    selector: str = "arc"
    private: bytes = b""
    public: str = ""

    @classmethod
    def generate(cls, domain: str, selector: str = "arc") -> ArcSealer:
        private, public = _rsa_key()
        return cls(domain, selector, private, public)

    def zone(self, rdata: str = "") -> str:
        """A zone for its domain publishing its key, or RDATA (a zone_values() entry)
        at its selector instead; for DnsServer(extra_zones={domain: zone})."""
        rdata = rdata or _txt_rdata(f"v=DKIM1; k=rsa; p={self.public}")
        return (f"$TTL 300\n@ IN SOA ns.{self.domain}. hostmaster.{self.domain}. 1 3600 600 86400 300\n"
                f"  IN NS ns.{self.domain}.\nns IN A 127.0.0.1\n"
                f"{self.selector}._domainkey IN TXT ( {rdata} )\n")

    def seal(self, message: bytes, results: str, domain: str | None = None,
             timestamp: int = 1772445600) -> bytes:
        """MESSAGE with an ARC set of this forwarder on top. RESULTS are what it saw on
        arrival, as Authentication-Results resinfo ("dkim=pass header.d=example.com;
        arc=pass" for a second hop); they become its ARC-Authentication-Results.
        DOMAIN claims another sealer's name, signed with this one's key (a forged seal)."""
        srv_id = f"mx.{self.domain}".encode()
        stamped = b"Authentication-Results: " + srv_id + b"; " + results.encode() + b"\r\n" + message
        arc_set = dkim.arc_sign(stamped, self.selector.encode(), (domain or self.domain).encode(),
                                self.private, srv_id, include_headers=list(SIGNED_HEADERS),
                                timestamp=timestamp, linesep=b"\r\n")
        if not arc_set:
            raise ValueError(f"dkimpy made no ARC set: {results!r}")
        return b"".join(arc_set) + message
