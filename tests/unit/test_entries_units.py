"""Whitelist entries as operators write them (entries.py; mx6ctl import's CSV): properties
over hostile lines, and the behaviour mutation testing found unpinned. No I/O."""
import ipaddress
import os
import time

import pytest
from hypothesis import given, settings, strategies as st

from mx6milter.config import parse_config
from mx6milter.ctl.common import address_ids
from mx6milter.ctl.import_export import parse_csv
from mx6milter.entries import (DEFAULT_REQUIREMENT, AddressIds, EntryError, LineParser, _fast_prefix,
                               check_source, format_expiry, format_line, parse_domain,
                               parse_expiry, parse_ipv6_prefix, split_line, value_expiry,
                               value_requirement)
from mx6milter.prefixes import field_to_network
from mx6milter.store import Store

NOW = 1_800_000_000   # 2027-01-15T08:00:00Z


def public(domain):
    return "." not in domain or domain in ("co.uk", "example.com")


def plain_ids(fold=True):
    return AddressIds(lambda address: address, fold_local_part=fold, private=False)


HOSTILE_WORDS = ["2001:db8::/48", "2001:DB8:1::", "::ffff:192.0.2.1", "192.0.2.0/24", "fe80::1%lo",
                 "partner.example", "B\u00fccher.example.", "*.x.example", "a@b.example",
                 "User@Example.ORG", "expires=90d", "expires=2027-02-01", "expires=0", "require=dkim",
                 "require=any", "bogus=1", "#", " # c", "\u202e", "\u200b", "\udcff", "\x00", ",",
                 "\t", "=", "x=", "/", "/129", "2001:db8::/15", "expires=-1d", "hmac:" + "0" * 32]
hostile_line = st.lists(st.one_of(st.sampled_from(HOSTILE_WORDS), st.text(max_size=12)),
                        max_size=6).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["ip", "domain", "ab"]), st.one_of(hostile_line, st.text(max_size=200)))
def test_any_line_is_an_entry_a_blank_or_an_entry_error_and_entries_round_trip(kind, line):
    parser = LineParser(kind, NOW, ids=plain_ids(), is_public=public)
    try:
        entry = parser.parse(line)
    except EntryError as err:
        assert str(err)
        return
    if entry is None:
        assert split_line(line) == ([], {})
        return
    written = format_line(kind, *entry.triple())
    assert parser.parse(written).triple() == entry.triple(), written
    assert format_line(kind, *parser.parse(written).triple()) == written        # a fixed point


@settings(max_examples=150, deadline=None)
@given(st.one_of(hostile_line, st.text(max_size=100)))
def test_expiry_is_never_past_or_beyond_2_to_the_40(text):
    try:
        epoch = parse_expiry(text, NOW)
    except EntryError as err:
        assert str(err).startswith("expires=")
        return
    assert epoch == 0 or NOW < epoch < 2 ** 40
    if epoch:
        assert parse_expiry(format_expiry(epoch), NOW) == epoch


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(hostile_line, st.text(max_size=60),
                          st.sampled_from(['"a,b"@x.example,f@y.example', "recipient,sender",
                                           'a@x.example,"f@y.example",90d', '"unterminated'])),
                max_size=8))
def test_csv_rows_give_an_entry_or_a_reason_each(lines):
    parser = LineParser("ab", NOW, ids=plain_ids())
    numbers = []
    for number, entry, error in parse_csv(enumerate(lines, 1), parser):
        assert (entry is None) != (error is None) and 1 <= number <= len(lines)
        numbers.append(number)
    assert numbers == sorted(set(numbers))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_source_names_are_safe_in_key_names_or_refused(name):
    try:
        checked = check_source(name)
    except EntryError:
        return
    assert checked == name and ":" not in name and "~" not in name and name != "sources"
    assert name.isascii() and 1 <= len(name) <= 64


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_stored_values_read_as_a_requirement_and_an_expiry(value):
    assert value_requirement(value) in ("dmarc", "dkim", "spf", "any")
    assert isinstance(value_expiry(value), int)


# --- pinned behaviour ----------------------------------------------------------------------


def test_the_default_requirement_of_a_domain_entry_is_dmarc():
    assert DEFAULT_REQUIREMENT == "dmarc"
    parser = LineParser("domain", NOW, is_public=public)
    assert parser.parse("partner.example").value == "dmarc 0"
    assert parser.entry("partner.example").value == "dmarc 0"
    assert value_requirement("dkim") == "dmarc"           # no expiry: unreadable, the default
    assert value_requirement("maybe 0") == "dmarc"
    assert value_requirement("spf 0") == "spf"


@pytest.mark.parametrize("value, expected", [
    ("0", 0), ("dkim 0", 0), ("1900000000", 1900000000), ("any 1900000000", 1900000000),
    ("64496,64500 1900000000", 1900000000), ("", -1), ("dkim", -1), ("dkim 5 ", -1),
    ("spf 12 34", 34), ("x y", -1),
])
def test_value_expiry(value, expected):
    assert value_expiry(value) == expected


@pytest.fixture
def far_from_utc():
    """The host's zone five hours east of UTC (a POSIX TZ string: no zone database
    needed): dates must still be read and written as UTC."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "MXS-5"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def test_dates_are_utc_whatever_the_hosts_zone(far_from_utc):
    assert time.timezone == -5 * 3600          # the zone really is not UTC here
    assert parse_expiry("2027-02-01", NOW) == 1801440000
    assert parse_expiry("2027-02-01T00:00:00", NOW) == 1801440000
    assert parse_expiry("2027-02-01T00:00:00Z", NOW) == 1801440000
    assert format_expiry(1801440000) == "2027-02-01T00:00:00Z"


@pytest.mark.parametrize("text, message", [
    ("\u00b2", "expires='\u00b2': expected never, Unix seconds, a duration such as 90d or 12h, "
                "or a date such as 2027-01-31"),
    ("\u0669\u0660d", "expires='\u0669\u0660d': expected never, Unix seconds, a duration such as "
                      "90d or 12h, or a date such as 2027-01-31"),
    ("soon", "expires='soon': expected never, Unix seconds, a duration such as 90d or 12h, "
             "or a date such as 2027-01-31"),
    (str(NOW), f"expires='{NOW}': already in the past"),
    (str(2 ** 40), f"expires='{2 ** 40}': too far in the future"),
    ("2027-01-15t08:00:00z", "expires='2027-01-15t08:00:00z': expected never, Unix seconds, "
                             "a duration such as 90d or 12h, or a date such as 2027-01-31"),
])
def test_expiry_errors_in_full(text, message):
    with pytest.raises(EntryError) as err:
        parse_expiry(text, NOW)
    assert str(err.value) == message


def test_expiry_edges():
    assert parse_expiry(str(NOW + 1), NOW) == NOW + 1
    assert parse_expiry(str(2 ** 40 - 1), NOW) == 2 ** 40 - 1
    assert parse_expiry(" 1d ", NOW) == NOW + 86400
    assert parse_expiry("90m", NOW) == NOW + 5400 and parse_expiry("30s", NOW) == NOW + 30
    assert format_expiry(-1) == "unreadable"
    assert format_expiry(1) == "1970-01-01T00:00:01Z"


@pytest.mark.parametrize("text, message", [
    ("a:b", "'a:b': a source name is 1 to 64 of the characters A-Z a-z 0-9 _ . - "
            "(it becomes part of Redis key names)"),
    ("sources", "'sources': a reserved name (the key schema uses it); choose another source name"),
])
def test_source_errors_in_full(text, message):
    with pytest.raises(EntryError) as err:
        check_source(text)
    assert str(err.value) == message


@pytest.mark.parametrize("text, message", [
    ("192.0.2.0/24", "'192.0.2.0/24': an IPv4 address or prefix; the whitelist takes IPv6 only "
                     "(IPv4 mail is never judged)"),
    ("10.1.2.3/8", "'10.1.2.3/8': an IPv4 address or prefix; the whitelist takes IPv6 only "
                   "(IPv4 mail is never judged)"),
    ("::ffff:0:0/96", "'::ffff:0:0/96': an IPv4-mapped address; those sessions count as IPv4 "
                      "and are never judged"),
    ("2000::/15", "'2000::/15': a /15 covers too much; the shortest prefix accepted is /16"),
    ("2001:db8::1/64", "'2001:db8::1/64': host bits set after the prefix length; "
                       "the prefix is 2001:db8::/64"),
])
def test_prefix_errors_in_full(text, message):
    with pytest.raises(EntryError) as err:
        parse_ipv6_prefix(text)
    assert str(err.value) == message


@pytest.mark.parametrize("text, expected", [
    ("2001::/16", "2001::/16"),
    ("2001:DB8::/32", "2001:db8::/32"),
    ("2001:db8::1", "2001:db8::1/128"),
    ("2001:db8::1/128", "2001:db8::1/128"),
    ("2001:db8:ffff:ffff::/64", "2001:db8:ffff:ffff::/64"),
    ("2001:0db8:0000::/048", "2001:db8::/48"),
    ("::1:0:0/96", "::1:0:0/96"),
])
def test_prefix_edges(text, expected):
    assert str(parse_ipv6_prefix(text)) == expected


@pytest.mark.parametrize("text", ["2001:db8::/1000", "2001:db8::/4a", "2001:db8::/\u0664\u0668",
                                  "2001:db8::/48/48", "2001:db8::/", "2001:db8::/ 48", "/48",
                                  "2001:db8::/-48", "2001:db8::/+48"])
def test_malformed_prefix_lengths_are_refused(text):
    with pytest.raises(EntryError, match="not an IPv6 address or prefix"):
        parse_ipv6_prefix(text)


@pytest.mark.parametrize("bits", range(16, 129))
def test_every_prefix_length_takes_the_fast_path_and_reads_back(bits):
    network = ipaddress.ip_network(f"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/{bits}", strict=False)
    assert _fast_prefix(str(network)) == network          # a million-line import stays fast
    entry = LineParser("ip", NOW).parse(str(network))
    assert field_to_network(entry.field) == network
    assert format_line("ip", *entry.triple()) == str(network)
    if bits < 128:
        host = network.network_address + (1 << (127 - bits))     # the highest host bit
        assert _fast_prefix(f"{host}/{bits}") is None
        with pytest.raises(EntryError, match="host bits set"):
            parse_ipv6_prefix(f"{host}/{bits}")


def test_the_fast_path_leaves_the_unusual_to_the_full_checks():
    assert _fast_prefix("2001:db8::1") == ipaddress.ip_network("2001:db8::1/128")
    for text in ("2001:db8::/15", "::ffff:0:0/96", "192.0.2.1", "2001:db8::/0048", "2001:db8::/4a",
                 "2001:db8::/\u0664\u0668", "2001:db8::/48/48", "2001:db8::/129", "x/48"):
        assert _fast_prefix(text) is None, text


@pytest.mark.parametrize("text, message", [
    ("*.partner.example", "'*.partner.example': no wildcards; an entry covers its subdomains already, "
                          "write 'partner.example'"),
    ("co.uk", "'co.uk': a public suffix or top-level domain; an entry covers every domain below it"),
    ("a@partner.example", "'a@partner.example': a mail address; the domain whitelist takes domains"),
])
def test_domain_errors_in_full(text, message):
    with pytest.raises(EntryError) as err:
        parse_domain(text, public)
    assert str(err.value) == message


def test_domain_notes_in_full():
    assert parse_domain("B\u00fccher.Example.", public) == (
        "xn--bcher-kva.example",
        "'Bücher.Example.' stored as 'xn--bcher-kva.example' (trailing dot removed, "
        "Unicode converted to its A-label form)")
    assert parse_domain("partner.example.", public)[1] == \
        "'partner.example.' stored as 'partner.example' (trailing dot removed)"
    parser = LineParser("domain", NOW, is_public=public)
    assert parser.parse("partner.example. require=spf").note == \
        "'partner.example.' stored as 'partner.example' (trailing dot removed)"
    with pytest.raises(EntryError) as err:
        parser.parse("partner.example require=maybe")
    assert str(err.value) == "require='maybe': expected one of dmarc, dkim, spf, any"


@pytest.mark.parametrize("kind, line, message", [
    ("ip", "2001:db8::/48 require=dkim", "unknown option require=; known: expires="),
    ("domain", "partner.example x=1", "unknown option x=; known: require=, expires="),
    ("ip", "", None),
    ("ip", "2001:db8::/48 2001:db9::/48", "expected PREFIX [options], got 2 words"),
    ("domain", "expires=1d", "expected DOMAIN [options], got 0 words"),
    ("ab", "a@x.example", "expected RECIPIENT SENDER [options], got 1 word"),
    ("ab", "a@x.example,b@y.example", "expected RECIPIENT SENDER [options], got 1 word "
                                      "(CSV? name the file .csv or give --format csv)"),
    ("domain", "a.example,b.example c.example", "expected DOMAIN [options], got 2 words"),
])
def test_line_errors_in_full(kind, line, message):
    parser = LineParser(kind, NOW, ids=plain_ids(), is_public=public)
    if message is None:
        assert parser.parse(line) is None
        return
    with pytest.raises(EntryError) as err:
        parser.parse(line)
    assert str(err.value) == message


def test_comments_options_and_the_line_limit():
    assert split_line("a#b c # d # e") == (["a#b", "c"], {})
    assert split_line("x expires=1d a=b=c") == (["x"], {"expires": "1d", "a": "b=c"})
    assert split_line("x e1=2") == (["x", "e1=2"], {})
    assert split_line("x" * 4096) == (["x" * 4096], {})
    with pytest.raises(EntryError) as err:
        split_line("x" * 4097)
    assert str(err.value) == "line longer than 4096 characters"


def test_entry_defaults_and_parser_defaults():
    assert LineParser("ip", NOW).entry("2001:db8::/48").value == "0"
    assert LineParser("ip", NOW, default_expires=NOW + 5).parse("2001:db8::/48").value == str(NOW + 5)
    assert LineParser("ab", NOW, ids=plain_ids()).entry("a@x.example", "b@y.example").value == "0"
    assert LineParser("domain", NOW, is_public=public).entry("partner.example").note == ""


@pytest.mark.parametrize("address", ["\u202ealice@example.com", "ali\u200bce@example.com",
                                     "alice\ufeff@example.com", "al\x00ice@example.com",
                                     "al\udcffice@example.com", "alice@exa\u200bmple.com"])
def test_invisible_and_control_characters_never_enter_an_addressbook(address):
    with pytest.raises(EntryError) as err:
        plain_ids()(address)
    assert str(err.value) == f"{address!r}: control characters or bytes that are not UTF-8"


def test_fold_local_part_no_is_honoured_by_mx6ctl(tmp_path):
    store = Store(client=type("C", (), {"register_script": lambda self, text: None})())
    for fold, expected in (("yes", "alice@example.org"), ("no", "Alice@example.org")):
        config = parse_config(f"[addressbook]\nfold_local_part = {fold}\n")
        ids = address_ids(config, store)
        assert ids("Alice@Example.ORG") == store.addressbook_id(expected)
    assert plain_ids(fold=False)("Alice@Example.ORG") == "Alice@example.org"
    assert plain_ids(fold=True)("Alice@Example.ORG") == "alice@example.org"


def test_ids_show_plain_or_hashed():
    assert plain_ids().show("a@x.example") == "a@x.example"
    hashed = AddressIds(lambda address: address, True, private=True)
    assert hashed.show("0" * 32) == "hmac:" + "0" * 32
    with pytest.raises(EntryError) as err:
        plain_ids()("hmac:" + "0" * 32)
    assert str(err.value) == (f"'hmac:{'0' * 32}': a hashed address, but no [addressbook] "
                              "secret_file is configured")


def test_duration_seconds():
    from mx6milter.entries import duration_seconds
    assert [duration_seconds(t) for t in (" 45s", "30m", "12h", "90d", "2w", "+1d")] == \
        [45, 1800, 43200, 7776000, 1209600, 86400]
    with pytest.raises(EntryError) as err:
        duration_seconds("5y")
    assert str(err.value) == "'5y': expected a duration such as 24h, 7d or 2w"
