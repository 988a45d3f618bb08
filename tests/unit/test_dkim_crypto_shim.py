"""evidence/dkimcrypto.py: dkimpy's integer conversions in C and its parsed keys kept,
with dkimpy's own results. Pure: keys come from the session fixture, nothing from DNS."""
import dkim
import dkim.crypto
import pytest
from dkimkeys import message
from hypothesis import given
from hypothesis import strategies as st

from mx6milter.evidence import auth, dkimcrypto  # noqa: F401  (auth installs the shim)


def reference_str2int(data) -> int:
    """dkimpy 1.1's definition, a byte at a time."""
    number = 0
    for byte in bytearray(data):
        number = (number << 8) | byte
    return number


def reference_int2str(number: int, length: int = -1) -> bytearray:
    assert number >= 0
    out = bytearray()
    while length < 0 or len(out) < length:
        out.append(number & 0xFF)
        number >>= 8
        if length < 0 and number == 0:
            break
    out.reverse()
    assert length < 0 or len(out) == length
    return out


def test_auth_installs_the_shim_behind_dkimpys_names():
    assert dkim.crypto.str2int is dkimcrypto.str2int
    assert dkim.crypto.int2str is dkimcrypto.int2str
    assert dkim.evaluate_pk.mx6milter_cached
    wrapped = dkim.evaluate_pk
    dkimcrypto.install()                        # a second install changes nothing
    assert dkim.evaluate_pk is wrapped


@given(st.binary(max_size=600))
def test_str2int_is_dkimpys(data):
    assert dkimcrypto.str2int(data) == reference_str2int(data)
    assert dkimcrypto.str2int(bytearray(data)) == reference_str2int(data)


@given(st.integers(min_value=0, max_value=1 << 4200), st.integers(min_value=-1, max_value=600))
def test_int2str_is_dkimpys(number, length):
    got = dkimcrypto.int2str(number, length)
    assert got == reference_int2str(number, length)     # too long for LENGTH: its last bytes
    assert type(got) is bytearray


def test_int2str_refuses_negative_numbers_as_dkimpy_does():
    with pytest.raises(AssertionError):
        dkimcrypto.int2str(-1)


def _verify(raw: bytes, record: bytes) -> bool:
    try:
        return dkim.DKIM(raw).verify(dnsfunc=lambda name, timeout=5: record)
    except dkim.ValidationError:                # e.g. the body hash
        return False


def test_signatures_verify_and_fail_as_before(dkim_keys):
    record = f"v=DKIM1; k=rsa; p={dkim_keys.rsa_public}".encode()
    signed = dkim_keys.sign(message(), "example.com")
    assert _verify(signed, record)
    assert _verify(signed, record)              # the cached key: the same answer
    assert not _verify(signed.replace(b"The figures", b"The Figures"), record)
    assert not _verify(dkim_keys.sign(message(), "example.com", key=dkim_keys.other_rsa_private),
                       record)


def test_a_record_is_parsed_once_and_a_changed_record_afresh(dkim_keys):
    name = b"cache-test._domainkey.example.com."
    record = f"v=DKIM1; k=rsa; p={dkim_keys.rsa_public}".encode()
    first = dkim.evaluate_pk(name, record)
    assert dkim.evaluate_pk(name, record) is first
    changed = dkim.evaluate_pk(name, b"v=DKIM1; k=ed25519; p=" + dkim_keys.ed25519_public.encode())
    assert changed is not first and changed[2] == b"ed25519"
    assert dkim.evaluate_pk(b"other._domainkey.example.com.", record) is not first


def test_a_refused_record_raises_every_time():
    for _ in range(2):
        with pytest.raises(dkim.KeyFormatError):
            dkim.evaluate_pk(b"bad._domainkey.example.com.", b"v=DKIM1; k=rsa; p=AAAA")


def test_an_overlong_record_is_parsed_but_not_kept(dkim_keys):
    record = (f"v=DKIM1; k=rsa; n={'x' * dkimcrypto.KEY_CACHE_MAX_RECORD}; "
              f"p={dkim_keys.rsa_public}").encode()
    name = b"long._domainkey.example.com."
    first = dkim.evaluate_pk(name, record)
    again = dkim.evaluate_pk(name, record)
    assert first[1] == again[1] == 2048 and again is not first


def _signed_digest(dkim_keys):
    """(hashlib digest, signature, dkimpy public key) of one RSA-SHA256 signature."""
    import hashlib
    private = dkim.crypto.parse_pem_private_key(dkim_keys.rsa_private)
    digest = hashlib.sha256(b"what was signed")
    signature = bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, private))
    public = {"modulus": private["modulus"], "publicExponent": private["publicExponent"]}
    return digest, signature, public


def test_rsa_verify_is_behind_dkimpys_name_and_agrees_with_it(dkim_keys):
    assert dkim.RSASSA_PKCS1_v1_5_verify is dkimcrypto.rsa_verify
    digest, signature, public = _signed_digest(dkim_keys)
    original = dkim.crypto.RSASSA_PKCS1_v1_5_verify        # dkimpy's, pure Python
    assert dkimcrypto.rsa_verify(digest, signature, public) is original(digest, signature, public) is True
    flipped = signature[:-1] + bytes([signature[-1] ^ 1])
    assert dkimcrypto.rsa_verify(digest, flipped, public) is original(digest, flipped, public) is False
    import hashlib
    other = hashlib.sha256(b"something else")
    assert dkimcrypto.rsa_verify(other, signature, public) is False


@given(st.binary(min_size=0, max_size=300))
def test_rsa_verify_of_hostile_signatures_is_false_never_an_error(dkim_keys, data):
    digest, _, public = _signed_digest(dkim_keys)
    assert dkimcrypto.rsa_verify(digest, data, public) is False


def test_rsa_verify_refuses_a_signature_not_below_the_modulus(dkim_keys):
    digest, signature, public = _signed_digest(dkim_keys)
    n = public["modulus"]
    wrapped = (int.from_bytes(signature, "big") + n).to_bytes(len(signature) + 1, "big")
    assert dkim.crypto.RSASSA_PKCS1_v1_5_verify(digest, wrapped, public)   # dkimpy reduces it
    assert dkimcrypto.rsa_verify(digest, wrapped, public) is False          # RFC 8017 8.2.2


def test_rsa_verify_leaves_what_openssl_will_not_take_to_dkimpy():
    import hashlib
    public = {"modulus": (1 << 1023) + 1, "publicExponent": 65537}
    with pytest.raises(KeyError):                       # dkimpy's answer to a hash it lacks
        dkimcrypto.rsa_verify(hashlib.md5(b"x"), b"\x01" * 128, public)
    even_exponent = {"modulus": (1 << 1023) + 1, "publicExponent": 4}       # OpenSSL: ValueError
    assert dkimcrypto.rsa_verify(hashlib.sha256(b"x"), b"\x01" * 128, even_exponent) is False
