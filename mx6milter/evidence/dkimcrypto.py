"""dkimpy's verification, made cheaper without changing what it decides.

dkimpy (kept for parsing, canonicalisation and results) converts between bytes and
integers one byte at a time in Python (``dkim.crypto.str2int``/``int2str``, twice per
RSA signature) and raises to the public exponent with Python's pow(), and parses
the key record and its ASN.1 again for every signature. ``install`` puts
``int.from_bytes``/``int.to_bytes`` behind those two names, with dkimpy's results
(bytearrays, the same bytes for every input), OpenSSL (``cryptography``) behind
``RSASSA_PKCS1_v1_5_verify`` (``rsa_verify``), and wraps
``dkim.evaluate_pk`` in a bounded cache keyed by the key name (selector and domain)
and the record's text. How long a record is reused is the resolver's business (its
cache keeps the TXT answer for its TTL); a changed record is other text, so it is
parsed afresh. A record dkimpy refuses raises, and raising is never cached. The
hostile-key screen (``auth.dkim_key_problem``) runs in the key lookup, before
``evaluate_pk``, for every signature, cached parse or not.

ARC (``evidence/arc.py``, dkimpy's ``dkim.ARC``) goes through the same functions.
"""
from __future__ import annotations

import functools

import dkim
import dkim.crypto
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

KEY_CACHE_SIZE = 512        # parsed key records kept
KEY_CACHE_MAX_RECORD = 4096 # longer records (never a sane key) are parsed, not kept


def str2int(data) -> int:
    """dkimpy's str2int: the big-endian unsigned integer of DATA."""
    return int.from_bytes(data, "big")


def int2str(number: int, length: int = -1) -> bytearray:
    """dkimpy's int2str: NUMBER big-endian, as few bytes as it needs (at least one), or
    with LENGTH given its last LENGTH bytes; AssertionError for a negative NUMBER."""
    assert number >= 0
    if length < 0:
        return bytearray(number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big"))
    return bytearray((number & ((1 << (8 * length)) - 1)).to_bytes(length, "big"))


_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


def rsa_verify(digest, signature, public_key, fallback=dkim.crypto.RSASSA_PKCS1_v1_5_verify) -> bool:
    """dkimpy's RSASSA_PKCS1_v1_5_verify (DIGEST a hashlib object, PUBLIC_KEY dkimpy's
    dict), the RSA step done by OpenSSL: about a seventh of Python's pow() for 2048
    bits. A signature not below the modulus fails, as RFC 8017 8.2.2 says (dkimpy
    would reduce it); a key or hash OpenSSL will not take goes to dkimpy's own code."""
    algorithm = _HASHES.get(digest.name.lower())
    try:
        if algorithm is None:
            raise UnsupportedAlgorithm(digest.name)
        key = rsa.RSAPublicNumbers(public_key["publicExponent"], public_key["modulus"]).public_key()
        key.verify(bytes(signature), digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))
    except InvalidSignature:
        return False
    except (ValueError, UnsupportedAlgorithm):
        return fallback(digest, signature, public_key)
    return True


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _parsed(evaluate, name, record):
    return evaluate(name, record)


def install() -> None:
    """Put the conversions, the RSA step and the key cache behind dkimpy's names
    (once; idempotent)."""
    if getattr(dkim.evaluate_pk, "mx6milter_cached", False):
        return
    evaluate = dkim.evaluate_pk

    def evaluate_pk(name, record):
        if record is None or len(record) > KEY_CACHE_MAX_RECORD:
            return evaluate(name, record)
        return _parsed(evaluate, name, record)

    evaluate_pk.mx6milter_cached = True     # type: ignore[attr-defined]
    dkim.crypto.str2int = str2int
    dkim.crypto.int2str = int2str
    dkim.RSASSA_PKCS1_v1_5_verify = rsa_verify
    dkim.evaluate_pk = evaluate_pk
