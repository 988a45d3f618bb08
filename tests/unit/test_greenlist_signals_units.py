"""Greenlist signals without DNS or Redis: the reverse name asked for."""
import ipaddress

import pytest


@pytest.mark.parametrize("text", ["2001:db8::1", "2001:db8:8::25", "::1",
                                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"])
def test_reverse_name_is_what_dnspython_builds(text):
    import dns.reversename
    from mx6milter.evidence.greenlist import reverse_name
    address = ipaddress.IPv6Address(text)
    assert reverse_name(address) == dns.reversename.from_address(text).to_text()
