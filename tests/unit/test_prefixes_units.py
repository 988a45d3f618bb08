"""IPv6 prefixes as Redis hash fields (prefixes.py): properties. No I/O."""
import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from mx6milter.prefixes import field_to_network, ip_candidates, ip_field

networks = st.tuples(st.integers(0, 2 ** 128 - 1), st.integers(0, 128)).map(
    lambda t: ipaddress.IPv6Network((t[0], t[1]), strict=False))


@settings(max_examples=200, deadline=None)
@given(networks)
def test_a_field_reads_back_as_its_network(network):
    field = ip_field(network)
    assert field_to_network(field) == network
    digits, length = field.split("/")
    assert len(digits) == (network.prefixlen + 3) // 4 and int(length) == network.prefixlen


@settings(max_examples=100, deadline=None)
@given(st.ip_addresses(v=6), networks)
def test_the_candidates_are_every_prefix_holding_the_address_longest_first(address, network):
    candidates = ip_candidates(address)
    assert len(candidates) == 129 == len(set(candidates))
    assert [field_to_network(c).prefixlen for c in candidates] == list(range(128, -1, -1))
    assert all(address in field_to_network(c) for c in candidates)
    assert (ip_field(network) in candidates) == (address in network)


@pytest.mark.parametrize("network, field", [
    ("2001:db8::/32", "20010db8/32"), ("2001:db8::/33", "20010db80/33"), ("::/0", "/0"),
    ("2001:db8::1/128", "20010db8000000000000000000000001/128"), ("8000::/1", "8/1"),
])
def test_fields(network, field):
    assert ip_field(ipaddress.IPv6Network(network)) == field
    assert field_to_network(field) == ipaddress.IPv6Network(network)
