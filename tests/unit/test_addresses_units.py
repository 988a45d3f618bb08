"""Addresses and domains from hostile input (addresses.py; SPF's identities; the
client address the MTA gives): properties over generated input, and the cases
mutation testing showed unpinned. No I/O."""
import email.utils
import ipaddress
import logging
import re
import string

import pytest
from hypothesis import assume, given, settings, strategies as st

from mx6milter.addresses import (AddressError, domain_of, domain_suffixes, domain_to_ascii,
                                 from_addresses, normalise_address, split_address, strip_brackets)
from mx6milter.evidence.auth import _helo_domain, _spf_sender, single_from_address
from mx6milter.policy import parse_client_ip

# Pieces that make parsers go wrong: brackets, separators, IDNA prefixes, bidi
# and zero-width characters, case-folding traps, lone surrogates (undecodable
# 8-bit input), controls and white space.
HOSTILE = ["@", "<", ">", ".", "..", "-", "_", "xn--", "XN--", "\u00df", "\u212a", "\u0130",
           "\u202e", "\u200b", "\ufeff", "\udcff", "\x00", "\x7f", "\r\n", "\t", " ", '"', "\\",
           "%", ":", "[", "]", "IPv6:", "b\u00fccher", "\u0661", "\uff21", "a" * 64, "b" * 70]
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=6)),
                        max_size=12).map("".join)
_ldh = st.text("abcxyz0189", min_size=1, max_size=6)
ldh_label = st.one_of(_ldh, st.builds("{}-{}".format, _ldh, _ldh), st.builds("{}--{}".format, _ldh, _ldh))
ascii_domain = st.lists(ldh_label, min_size=1, max_size=4).map(".".join)
local_part = st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~.\"@",
                     min_size=1, max_size=64)
LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


@settings(max_examples=200, deadline=None)
@given(st.one_of(hostile_text, st.text(max_size=300)), st.booleans())
def test_domain_to_ascii_gives_a_valid_a_label_domain_or_address_error(text, underscore):
    try:
        domain = domain_to_ascii(text, underscore)
    except AddressError:
        return
    assert domain.isascii() and domain == domain.lower() and 0 < len(domain) <= 253
    allowed = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)") if underscore else LABEL
    assert all(allowed.fullmatch(label) for label in domain.split("."))
    assert domain_to_ascii(domain, underscore) == domain                     # idempotent
    if text.isascii():                                                         # case, dot, spaces
        assert domain_to_ascii(" " + text.strip().upper() + ". ", underscore) == domain


@settings(max_examples=300, deadline=None)
@given(st.one_of(hostile_text, st.text(max_size=300), ascii_domain), st.booleans())
def test_kept_domains_are_what_normalising_gives(text, underscore):
    from mx6milter import addresses
    outcomes = []
    for normalise in (domain_to_ascii, domain_to_ascii, addresses._domain_to_ascii):
        try:
            outcomes.append(normalise(text, underscore))
        except AddressError as err:
            outcomes.append(("refused", str(err)))          # refusals are never kept
    assert outcomes[0] == outcomes[1] == outcomes[2]


def test_kept_domains_are_bounded_and_long_inputs_not_kept():
    from mx6milter import addresses
    assert addresses._domain_to_ascii_kept.cache_info().maxsize == addresses.DOMAINS_KEPT
    padded = " " * 400 + "Example.ORG"
    kept = addresses._domain_to_ascii_kept.cache_info().currsize
    assert domain_to_ascii(padded) == "example.org"
    assert addresses._domain_to_ascii_kept.cache_info().currsize == kept


@settings(max_examples=200, deadline=None)
@given(ascii_domain)
def test_ascii_domains_are_lower_cased_and_keep_their_labels(domain):
    assume(len(domain) <= 253)
    assert domain_to_ascii(domain.upper() + ".") == domain
    assert domain_to_ascii(domain, underscore=True) == domain


@settings(max_examples=200, deadline=None)
@given(st.one_of(hostile_text, st.text(max_size=200)), st.booleans())
def test_normalise_address_raises_only_address_error_and_is_idempotent(text, fold):
    try:
        address = normalise_address(text, fold)
    except AddressError:
        return
    local, domain = address.rsplit("@", 1)
    assert domain == domain_to_ascii(domain)
    assert not re.search(r"[\s<>\x00-\x1f\x7f]", local) and 0 < len(local) <= 64
    local.encode("utf-8")
    assert normalise_address(address, fold) == address
    if fold:
        assert not any("A" <= ch <= "Z" for ch in local)
        assert all(ch.isascii() == orig.isascii() for ch, orig in zip(local, split_address(text)[0]))
    else:
        assert local == split_address(text)[0]


@settings(max_examples=150, deadline=None)
@given(local_part, ascii_domain, st.booleans())
def test_split_address_round_trips_with_and_without_brackets(local, domain, brackets):
    address = f"{local}@{domain}"
    assert split_address(f"<{address}>" if brackets else address) == (local, domain)


from_piece = st.sampled_from(["Alice", "B0b", " ", "  ", '"', "<", ">", "@", ".", "..", "a", "b.c",
                              "+", "-", "_", ",", "(", ")", "\t", "=?utf-8?q?x?=", "\u00c4", "\\",
                              ":", ";", "[1.2.3.4]", "a@b", "<a@b.c>", '"A B"'])


# Near the plain forms: a name, blanks, <local@domain> or local@domain, each part made
# of ordinary words around at most one character that email.utils may read otherwise.
_odd = st.sampled_from(["", "", "", "", " ", "  ", ",", "(", ")", ".", "..", '"', "\\", "=?utf-8?q?x?=",
                        "\u00c4", "_", ":", ";", "@", "<", ">", "\t", "+", "-", "[1.2.3.4]"])
_word = st.sampled_from(["", "Alice", "B0b", "a", "c.d", "0"])
_part = st.builds("{}{}{}".format, _word, _odd, _word)
near_plain_from = st.one_of(
    st.builds("{}{}<{}@{}>{}".format, _part, st.sampled_from(["", " ", "  ", "\t"]), _part, _part,
              st.sampled_from(["", " ", ",", " ("])),
    st.builds("{}{}@{}{}".format, st.sampled_from(["", " "]), _part, _part,
              st.sampled_from(["", " ", ",", "(", "."])),
    st.lists(from_piece, max_size=12).map("".join))


# Each plain form with one character put in each place: every printable ASCII
# character, a few others, and the blanks email.utils treats specially.
ODD_CHARACTERS = [chr(c) for c in range(0x20, 0x7f)] + ["\t", "\r\n ", "\u00c4", "\u3002", ""]
PLAIN_TEMPLATES = ["Alice{} <a@b.c>", "Alice {}<a@b.c>", "{}Alice <a@b.c>", "A{}B <a@b.c>",
                   '"Al{}ice" <a@b.c>', '"A" {}<a@b.c>', "<a{}b@c.d>", "<a@c{}d>", "<a@c.d>{}",
                   "a{}@c.d", "a@c{}.d", "a@c.d{}", "{}a@c.d", " {} <a@b.c>", "A B{} C <x.y@z>"]


@pytest.mark.parametrize("template", PLAIN_TEMPLATES)
def test_from_addresses_near_the_plain_forms_are_what_email_utils_reads(template):
    for char in ODD_CHARACTERS:
        values = [template.format(char)]
        expected = [address for _name, address in email.utils.getaddresses(values) if address]
        assert from_addresses(values) == expected, values


@settings(max_examples=4000, deadline=None)
@given(st.lists(near_plain_from, min_size=1, max_size=3))
def test_from_addresses_are_what_email_utils_reads(values):
    expected = [address for _name, address in email.utils.getaddresses(values) if address]
    assert from_addresses(values) == expected


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_strip_brackets_removes_exactly_one_enclosing_pair(text):
    assert strip_brackets("<" + text + ">") == text
    stripped = text.strip()
    if not (stripped.startswith("<") and stripped.endswith(">")):
        assert strip_brackets(text) == stripped


@settings(max_examples=200, deadline=None)
@given(ascii_domain)
def test_domain_suffixes_are_every_parent_down_to_two_labels(domain):
    suffixes = domain_suffixes(domain)
    labels = domain.split(".")
    assert len(suffixes) == max(len(labels) - 1, 0)
    assert all(domain.endswith(s) and s.count(".") >= 1 for s in suffixes)
    assert suffixes == sorted(suffixes, key=len, reverse=True)
    if suffixes:
        assert suffixes[0] == domain


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(hostile_text, st.text(max_size=100)), max_size=3))
def test_from_addresses_and_single_from_never_raise(values):
    addresses = from_addresses(values)
    assert addresses is None or all(isinstance(a, str) and a for a in addresses)
    address, problem = single_from_address(values)
    assert bool(address) != bool(problem)
    if address:
        assert domain_of(address) is not None


@settings(max_examples=150, deadline=None)
@given(st.one_of(hostile_text, st.text(max_size=100)))
def test_spf_identities_are_usable_or_refused(text):
    try:
        local, domain = _spf_sender(text)
    except AddressError:
        pass
    else:
        assert local and "@" not in local and domain == domain_to_ascii(domain)
    helo = _helo_domain(text)
    assert helo is None or helo == domain_to_ascii(helo)


@settings(max_examples=200, deadline=None)
@given(st.one_of(hostile_text, st.text(max_size=60),
                 st.ip_addresses().map(str), st.ip_addresses(v=6).map(lambda a: f"IPv6:{a}")))
def test_parse_client_ip_gives_an_address_or_none(text):
    address = parse_client_ip(text)
    assert address is None or isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address))


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=6), st.sampled_from(["IPv6:", "ipv6:", "IPV6:"]), st.booleans())
def test_sendmails_ipv6_prefix_is_stripped_exactly(address, prefix, brackets):
    text = f"{prefix}{address}"
    assert parse_client_ip(f"[{text}]" if brackets else text) == address
    assert parse_client_ip(f" {address}%eth0 ") == address


# --- cases mutation testing found unpinned --------------------------------------------------


@pytest.mark.parametrize("text", ["<alice@example.com", "alice@example.com>", "<alice@example.com>>",
                                  "alice@", "@example.com", "alice", "", "<>", "a b@example.com",
                                  "a\x00b@example.com", "\udcffa@example.com", "a" * 65 + "@example.com",
                                  "a<b@example.com", "a>b@example.com", "a\x7f@example.com"])
def test_malformed_addresses_are_refused(text):
    with pytest.raises(AddressError):
        normalise_address(text)


def test_a_half_bracketed_address_is_not_trimmed():
    assert strip_brackets("<alice@example.com") == "<alice@example.com"
    assert strip_brackets("alice@example.com>") == "alice@example.com>"
    assert strip_brackets(" <alice@example.com> ") == "alice@example.com"


def test_the_last_at_sign_splits_and_64_octet_local_parts_are_allowed():
    assert split_address('"a@b"@example.com') == ('"a@b"', "example.com")
    assert split_address("a" * 64 + "@example.com")[0] == "a" * 64


@pytest.mark.parametrize("text, expected", [
    ("Example.ORG.", "example.org"),
    ("  b\u00fccher.example ", "xn--bcher-kva.example"),
    ("a" * 63 + ".example", "a" * 63 + ".example"),
    (".".join(["a" * 49] * 5) + ".abc", ".".join(["a" * 49] * 5) + ".abc"),   # exactly 253
])
def test_domains_at_the_limits(text, expected):
    assert domain_to_ascii(text) == expected


@pytest.mark.parametrize("text", ["", " ", ".", "a" * 64 + ".example", "-a.example", "a-.example",
                                  "a..example", "a_b.example", ".".join(["a" * 49] * 5) + ".abcd",
                                  "\u202eexample.org", "exa mple.org", "xn--.example"])
def test_domains_refused(text):
    with pytest.raises(AddressError):
        domain_to_ascii(text)


def test_underscore_only_where_asked_and_long_unicode_refused():
    assert domain_to_ascii("_mx6._tcp.Example.org", underscore=True) == "_mx6._tcp.example.org"
    with pytest.raises(AddressError, match="253"):
        domain_to_ascii("\u00fc" * 254)
    with pytest.raises(AddressError):
        domain_to_ascii("\u00fc" * 60 + "." + "\u00fc" * 60 + "." + "\u00fc" * 60 + ".example")


def test_fold_only_when_asked_and_domain_always_normalised():
    assert normalise_address("<Alice@Example.ORG>") == "alice@example.org"
    assert normalise_address("Alice@Example.ORG", fold_local_part=False) == "Alice@example.org"
    assert normalise_address("J\u00d6RG@example.org") == "j\u00f6rg@example.org"
    assert normalise_address("J\u00d6RG@example.org", fold_local_part=False) == "J\u00d6RG@example.org"


def test_domain_of_and_suffixes_edges():
    assert domain_of("a@Example.ORG") == "example.org"
    assert domain_of("nobody") is None
    assert domain_suffixes("example") == []
    assert domain_suffixes("a.b.example.org") == ["a.b.example.org", "b.example.org", "example.org"]


def test_from_fields_bounded_and_unparseable_is_none():
    assert from_addresses(["Alice <a@example.org>, b@example.net"]) == ["a@example.org", "b@example.net"]
    assert from_addresses(["x" * 8192]) == ["x" * 8192]
    assert from_addresses(["x" * 8193]) is None
    assert from_addresses(["x" * 4096, "y" * 4097]) is None
    assert from_addresses(["(" * 20000]) is None


def test_a_from_field_that_breaks_the_parser_is_none_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="mx6milter.addresses"):
        assert from_addresses(["(" * 5000]) is None            # nested comments: RecursionError
    assert [r.getMessage() for r in caplog.records] == [
        "From field could not be parsed: RecursionError('maximum recursion depth exceeded')"]


RLO_DOMAIN = "a\u202e.example"


@pytest.mark.parametrize("text, message", [
    ("", "empty domain"),
    (" . ", "empty domain"),
    ("a" * 254, "domain longer than 253 characters"),
    ("a..example", "'a..example': not a valid domain"),
    (RLO_DOMAIN, f"{RLO_DOMAIN!r}: not a valid domain (Codepoint U+202E not allowed at position 2 "
                 f"in {RLO_DOMAIN!r})"),
])
def test_domain_errors_in_full(text, message):
    with pytest.raises(AddressError) as err:
        domain_to_ascii(text)
    assert str(err.value) == message


@pytest.mark.parametrize("text, message", [
    ("x" * 150, f"{'x' * 100!r}: expected local-part@domain"),
    ("a b" + "c" * 150 + "@example.com", f"{'a b' + 'c' * 97!r}: bad local part"),
    ("\udcff" * 101 + "@example.com", f"{chr(0xdcff) * 100!r}: bad local part"),
    ("\udcff" * 50 + "@example.com", f"{chr(0xdcff) * 50 + '@example.com'!r}: local part is not UTF-8"),
    ("a\udcff@" + "d" * 120, f"{'a' + chr(0xdcff) + '@' + 'd' * 97!r}: local part is not UTF-8"),
    ("a\udcff" + "b" * 60 + "@example.com",
     f"{'a' + chr(0xdcff) + 'b' * 60 + '@example.com'!r}: local part is not UTF-8"),
])
def test_address_errors_in_full(text, message):
    with pytest.raises(AddressError) as err:
        split_address(text)
    assert str(err.value) == message


def test_domain_suffixes_of_one_label_and_of_two():
    assert domain_suffixes("") == []
    assert domain_suffixes("org") == []
    assert domain_suffixes("example.org") == ["example.org"]
