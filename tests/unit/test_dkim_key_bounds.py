"""DKIM key screening (auth.dkim_key_problem): a hostile key never reaches pow().

Pure: keys are built here as DER bytes; nothing is verified."""
import base64
import secrets
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mx6milter.evidence.auth import MAX_RSA_BITS, dkim_key_problem, rsa_public_numbers


def _der_int(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")    # leading 0: positive
    return b"\x02" + _der_length(len(body)) + body


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _seq(body: bytes) -> bytes:
    return b"\x30" + _der_length(len(body)) + body


def rsa_public_key(n: int, e: int, spki: bool = True) -> bytes:
    """DER of an RSAPublicKey, wrapped in a SubjectPublicKeyInfo when SPKI."""
    key = _seq(_der_int(n) + _der_int(e))
    if not spki:
        return key
    algorithm = _seq(b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01\x05\x00")   # rsaEncryption
    return _seq(algorithm + b"\x03" + _der_length(len(key) + 1) + b"\x00" + key)


def record(der: bytes, extra: bytes = b"v=DKIM1; k=rsa; ") -> bytes:
    return extra + b"p=" + base64.b64encode(der)


def odd(bits: int) -> int:
    return secrets.randbits(bits) | (1 << (bits - 1)) | 1


@pytest.mark.parametrize("spki", [True, False])
def test_numbers_are_read_from_both_key_forms(spki):
    n = odd(2048)
    assert rsa_public_numbers(rsa_public_key(n, 65537, spki)) == (n, 65537)


def test_a_key_made_by_openssl_is_accepted():
    private = subprocess.run(["openssl", "genrsa", "2048"], check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=private,
                         check=True, capture_output=True).stdout
    assert dkim_key_problem(record(der)) == ""
    assert rsa_public_numbers(der)[1] == 65537


@pytest.mark.parametrize("n_bits, e", [(1024, 65537), (2048, 3), (4096, 65537), (3072, 17)])
def test_ordinary_keys_pass(n_bits, e):
    assert dkim_key_problem(record(rsa_public_key(odd(n_bits), e))) == ""


@pytest.mark.parametrize("n_bits, e, words", [
    (16384, odd(16384), "longer than"),        # the red team's key: 8 s of pow() before
    (4097, 65537, "4097 bits"),
    (1023, 65537, "1023 bits"),
    (512, 65537, "512 bits"),
    (2048, odd(65), "exponent of 65 bits"),
    (4096, odd(4096), "exponent of 4096 bits"),
    (2048, 1, "exponent"),
    (2048, 65536, "exponent"),
], ids=lambda value: f"{value.bit_length()}bits" if isinstance(value, int) else value)
def test_keys_outside_the_bounds_are_refused(n_bits, e, words):
    problem = dkim_key_problem(record(rsa_public_key(odd(n_bits), e)))
    assert words in problem


def test_the_largest_key_within_the_record_bound_is_judged_on_its_numbers():
    # A 4,096-bit modulus with a 4,096-bit exponent still fits MAX_KEY_RECORD:
    # refused for the exponent, not for the length.
    problem = dkim_key_problem(record(rsa_public_key(odd(MAX_RSA_BITS), odd(MAX_RSA_BITS))))
    assert "exponent of 4096 bits" in problem


@pytest.mark.parametrize("text", [
    b"v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(32)),     # dkimpy checks these
    b"v=DKIM1; k=rsa; p=",                                        # revoked: dkimpy says so
    b"v=DKIM1; k=rsa; p=!!!not base64",
    b"this is not a key",
])
def test_what_is_not_an_rsa_key_is_left_to_dkimpy(text):
    assert dkim_key_problem(text) == ""


@pytest.mark.parametrize("der", [
    b"\x30", b"\x30\x80", b"\x30\x85\xff\xff\xff\xff\xff", b"\x30\x03\x02\x01",
    _seq(_der_int(5)), _seq(_der_int(5) + _der_int(3) + _der_int(7)),
    _seq(b"\x02\x00" + _der_int(3)), _seq(_der_int(5) + _der_int(3)) + b"\x00",
    _seq(_seq(b"") + b"\x03\x02\x01\x00"),
])
def test_unreadable_der_is_refused(der):
    assert rsa_public_numbers(der) is None
    assert dkim_key_problem(record(der)) == "unreadable RSA public key"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_der_bytes_give_numbers_or_none(der):
    numbers = rsa_public_numbers(der)
    assert numbers is None or (len(numbers) == 2 and all(isinstance(x, int) for x in numbers))
    assert isinstance(dkim_key_problem(record(der)), str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_any_record_gives_a_verdict(text):
    assert isinstance(dkim_key_problem(text), str)


def test_the_screen_is_kept_per_record_text_and_bounded():
    from mx6milter.evidence import auth
    good = record(rsa_public_key(odd(2048), 65537))
    bad = record(rsa_public_key(odd(2048), 65536))
    for _ in range(2):                          # a second look: the same answers
        assert dkim_key_problem(good) == ""
        assert "exponent" in dkim_key_problem(bad)
        assert dkim_key_problem(bytearray(bad)) == dkim_key_problem(bad)
    assert auth._key_record_problem.cache_info().maxsize == auth.KEY_PROBLEMS_KEPT
    # a record over the bound is refused before the kept answers: never kept
    kept = auth._key_record_problem.cache_info().currsize
    assert "longer than" in dkim_key_problem(b"p=" + b"A" * auth.MAX_KEY_RECORD)
    assert auth._key_record_problem.cache_info().currsize == kept
