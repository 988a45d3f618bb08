"""The socketmap codec of mx6ctl transport-map (mx6milter.outbound.socketmap), and its answers."""
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mx6milter.dns import DnsTempError
from mx6milter.outbound.socketmap import MAX_REQUEST, NetstringError, answer, netstring, parse_netstring


@given(st.lists(st.binary(max_size=MAX_REQUEST), max_size=5))
def test_netstrings_round_trip_one_after_another(payloads):
    buffer = b"".join(netstring(p) for p in payloads)
    for payload in payloads:
        parsed = parse_netstring(buffer)
        assert parsed is not None
        got, buffer = parsed
        assert got == payload
    assert buffer == b""


@given(st.binary(max_size=200), st.data())
def test_a_cut_netstring_asks_for_more(payload, data):
    whole = netstring(payload)
    cut = data.draw(st.integers(0, len(whole) - 1))
    assert parse_netstring(whole[:cut]) is None


@given(st.binary(max_size=2000))
def test_hostile_bytes_give_a_netstring_none_or_an_error(junk):
    try:
        parsed = parse_netstring(junk)
    except NetstringError:
        return
    if parsed is not None:
        payload, rest = parsed
        assert junk == netstring(payload) + rest and len(payload) <= MAX_REQUEST


@pytest.mark.parametrize("junk", [b"x:", b"-1:,", b"01:a,", b"3:abc;", b"12345", b"1100000:",
                                  b"1101:" + b"a" * 1101 + b","])
def test_what_is_never_a_request_is_an_error(junk):
    with pytest.raises(NetstringError):
        parse_netstring(junk)


class Dns:
    """The resolver's query(), answering from a dict (name -> rdatas, or an exception)."""

    def __init__(self, answers):
        self.answers, self.asked = answers, []

    def query(self, name, rdtype):
        self.asked.append((name, rdtype))
        value = self.answers.get(name, [])
        if isinstance(value, Exception):
            raise value
        return value


SRV = SimpleNamespace(priority=10, weight=0, port=25, target="mx6.with6.example.")
DOT = SimpleNamespace(priority=0, weight=0, port=0, target=".")


@pytest.mark.parametrize("key,records,expected", [
    ("with6.example", [SRV], b"OK mx6:"),
    ("With6.Example.", [SRV], b"OK mx6:"),
    ("only4.example", [], b"NOTFOUND "),
    ("no6.example", [DOT], b"NOTFOUND "),                  # "no MX6 here", said explicitly
    ("u@with6.example", [SRV], b"OK mx6:"),                # the only key Postfix asks
    ("\"a@b\"@with6.example", [SRV], b"OK mx6:"),
    ("*", [SRV], b"NOTFOUND "),
    (".with6.example", [SRV], b"NOTFOUND "),               # a parent's record is not a subdomain's
    ("bad..name", [SRV], b"NOTFOUND "),
])
def test_answers(key, records, expected):
    dns = Dns({"_mx6._tcp." + key.rpartition("@")[2].lower().strip("."): records})
    assert answer(dns, b"mx6 " + key.encode(), "mx6", "mx6:") == expected


def test_only_the_domain_is_looked_up_and_as_srv():
    dns = Dns({})
    answer(dns, b"mx6 *", "mx6", "mx6:")
    answer(dns, b"mx6 u@with6.example", "mx6", "mx6:")
    assert dns.asked == [("_mx6._tcp.with6.example", "SRV")]


def test_a_failed_lookup_is_temp_and_a_wrong_map_perm():
    dns = Dns({"_mx6._tcp.with6.example": DnsTempError("timed out")})
    assert answer(dns, b"mx6 with6.example", "mx6", "mx6:") == b"TEMP timed out"
    assert answer(dns, b"other with6.example", "mx6", "mx6:").startswith(b"PERM ")
    assert answer(dns, b"mx6", "mx6", "mx6:").startswith(b"PERM ")
