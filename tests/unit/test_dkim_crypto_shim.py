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
