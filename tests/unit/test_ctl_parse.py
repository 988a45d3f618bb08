"""mx6ctl's pure parts: entries, expiry, line format, vCard, message files, progress. No I/O."""
import io

import pytest

from mx6milter.addresses import normalise_address
from mx6milter.ctl.explain import build_message, split_message
from mx6milter.ctl.import_export import Progress, Reporter
from mx6milter.entries import (AddressIds, EntryError, LineParser, check_source, format_expiry,
                               format_line, parse_domain, parse_expiry, parse_ipv6_prefix)
from mx6milter.evidence.whitelist import AUTHENTICATED_WAYS
from mx6milter.entries import REQUIREMENTS
from mx6milter.store import Store
from mx6milter.prefixes import ip_field
from mx6milter import vcard

NOW = 1_800_000_000   # 2027-01-15T08:00:00Z


def public(domain):
    return domain in ("com", "org", "co.uk", "example") or "." not in domain


# --- prefixes ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2001:db8::25", "2001:db8::25/128"),
    ("2001:DB8:1::/48", "2001:db8:1::/48"),
    (" 2001:db8:6::/47 ", "2001:db8:6::/47"),
])
def test_good_prefixes(text, expected):
    assert str(parse_ipv6_prefix(text)) == expected


@pytest.mark.parametrize("text, words", [
    ("192.0.2.1", "IPv4"),
    ("10.0.0.0/8", "IPv4"),
    ("10.1.2.3/8", "IPv4"),
    ("::ffff:192.0.2.1", "IPv4-mapped"),
    ("2001:db8::1/48", "the prefix is 2001:db8::/48"),
    ("2000::/8", "covers too much"),
    ("::/0", "covers too much"),
    ("fe80::1%eth0", "zone index"),
    ("2001:db8::/129", "not an IPv6"),
    ("example.org", "not an IPv6"),
    ("", "not an IPv6"),
])
def test_bad_prefixes_say_why(text, words):
    with pytest.raises(EntryError) as err:
        parse_ipv6_prefix(text)
    assert words in str(err.value)


# --- domains ----------------------------------------------------------------------------


def test_domain_unicode_and_trailing_dot_are_normalised_with_a_note():
    domain, note = parse_domain("Bücher.Example.", public)
    assert domain == "xn--bcher-kva.example"
    assert "trailing dot removed" in note and "A-label" in note
    assert parse_domain("Partner.EXAMPLE", public) == ("partner.example", "")


@pytest.mark.parametrize("text, words", [
    ("com", "public suffix"),
    ("co.uk", "public suffix"),
    ("localhost", "public suffix"),
    ("*.partner.example", "no wildcards"),
    ("alice@partner.example", "mail address"),
    ("bad_label.example", "not a valid domain"),
    ("-x.example", "not a valid domain"),
    ("", "empty"),
])
def test_bad_domains_say_why(text, words):
    with pytest.raises(EntryError) as err:
        parse_domain(text, public)
    assert words in str(err.value)


def test_requirements_match_the_evaluator():
    assert AUTHENTICATED_WAYS + ("any",) == REQUIREMENTS


# --- sources and expiry -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["local", "partner-feed", "a.b_c", "x" * 64])
def test_good_source_names(name):
    assert check_source(name) == name


@pytest.mark.parametrize("name", ["", "a:b", "a b", "feed~1", "x" * 65, "ü", "a*"])
def test_bad_source_names(name):
    with pytest.raises(EntryError):
        check_source(name)


@pytest.mark.parametrize("text, expected", [
    ("never", 0), ("0", 0), ("", 0),
    ("90d", NOW + 90 * 86400), ("+12h", NOW + 12 * 3600), ("2w", NOW + 14 * 86400),
    ("1900000000", 1900000000),
    ("2027-02-01", 1801440000), ("2027-02-01T00:00:00Z", 1801440000),
    ("2027-02-01T01:00:00+01:00", 1801440000),
])
def test_expiry_forms(text, expected):
    assert parse_expiry(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2020-01-01", "1000", "-5d", "5y", "2**40"])
def test_bad_or_past_expiry(text):
    with pytest.raises(EntryError):
        parse_expiry(text, NOW)


def test_format_expiry_reads_back():
    assert format_expiry(0) == "never"
    assert parse_expiry(format_expiry(1801440000), NOW) == 1801440000


# --- lines ------------------------------------------------------------------------------


def ids(private=False, secret=None):
    store = Store(client=FakeClient(), addressbook_secret=secret)
    return AddressIds(store.addressbook_id, True, private)


class FakeClient:
    """Store's constructor registers scripts; pure tests never run them."""

    def register_script(self, text):
        return None


def test_ip_lines():
    parser = LineParser("ip", NOW, default_expires=0)
    assert parser.parse("  # a comment") is None
    assert parser.parse("") is None
    entry = parser.parse("2001:db8:1::/48 expires=2027-02-01  # partner")
    assert entry.triple() == ("", ip_field(parse_ipv6_prefix("2001:db8:1::/48")), "1801440000")
    with pytest.raises(EntryError, match="unknown option"):
        parser.parse("2001:db8:1::/48 require=dkim")
    with pytest.raises(EntryError, match="expected PREFIX"):
        parser.parse("2001:db8:1::/48 2001:db8:2::/48")
    with pytest.raises(EntryError, match="given twice"):
        parser.parse("2001:db8:1::/48 expires=1d expires=2d")
    with pytest.raises(EntryError, match="longer than"):
        parser.parse("2001:db8::/48 #" + "x" * 5000)


def test_domain_lines_default_and_explicit_requirement():
    parser = LineParser("domain", NOW, is_public=public, default_requirement="dkim")
    assert parser.parse("partner.example").triple() == ("", "partner.example", "dkim 0")
    assert parser.parse("partner.example require=any").value == "any 0"
    with pytest.raises(EntryError, match="require="):
        parser.parse("partner.example require=maybe")


def test_addressbook_lines_use_the_milters_normalisation():
    parser = LineParser("ab", NOW, ids=ids())
    entry = parser.parse("User@Example.ORG  Friend@Bücher.example")
    assert entry.suffix == normalise_address("User@Example.ORG") == "user@example.org"
    assert entry.field == "friend@xn--bcher-kva.example"
    # an '=' in an address is an address, not an option
    assert parser.parse("user@example.org bounce=x@list.example").field == "bounce=x@list.example"
    with pytest.raises(EntryError, match="local-part@domain"):
        parser.parse("user friend@partner.example")
    with pytest.raises(EntryError, match="CSV\\? name the file .csv"):
        parser.parse("user@example.org,friend@partner.example")
    with pytest.raises(EntryError, match="not UTF-8"):
        parser.parse("user@example.org fr\udcffiend@partner.example")


def test_privacy_ids_are_the_milters_keyed_hashes():
    secret = b"0123456789abcdef-secret"
    store = Store(client=FakeClient(), addressbook_secret=secret)
    private = AddressIds(store.addressbook_id, True, True)
    stored = private("Friend@Partner.example")
    assert stored == store.addressbook_id(normalise_address("friend@partner.example"))
    assert "@" not in stored and len(stored) == 32
    assert private(private.show(stored)) == stored          # hmac:HEX reads back
    with pytest.raises(EntryError, match="no \\[addressbook\\] secret_file"):
        ids()(private.show(stored))


@pytest.mark.parametrize("kind, line", [
    ("ip", "2001:db8:1::/48"),
    ("ip", "2001:db8:1::/48 expires=2027-02-01T00:00:00Z"),
    ("domain", "partner.example require=spf"),
    ("domain", "xn--bcher-kva.example require=dmarc expires=2027-02-01T00:00:00Z"),
    ("ab", "user@example.org friend@partner.example"),
    ("ab", "user@example.org friend@partner.example expires=2027-02-01T00:00:00Z"),
])
def test_format_line_is_what_the_parser_reads(kind, line):
    parser = LineParser(kind, NOW, ids=ids(), is_public=public)
    entry = parser.parse(line)
    assert format_line(kind, entry.suffix, entry.field, entry.value) == line


# --- vCard ------------------------------------------------------------------------------


def events(text):
    return list(vcard.emails(enumerate(text.splitlines(), start=1)))


def test_vcard_emails_groups_folding_and_quoted_printable():
    text = ("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Alice\r\n"
            "item1.EMAIL;TYPE=INTERNET,pref:alice@partner.example\r\n"
            "EMAIL;TYPE=work:\r\n bob@partner.example\r\n"
            "NOTE:has a: colon\r\nEND:VCARD\r\n"
            "BEGIN:VCARD\r\nVERSION:2.1\r\n"
            "EMAIL;INTERNET;ENCODING=QUOTED-PRINTABLE:carol=40part=\r\nner.example\r\n"
            'EMAIL;PID="1:2":mailto:dave@partner.example\r\n'
            "EMAIL:o\\,brien@partner.example\r\n"
            "AGENT:BEGIN:VCARD\r\n"
            "END:VCARD\r\n")
    assert events(text) == [
        ("email", 4, "alice@partner.example"),
        ("email", 5, "bob@partner.example"),
        ("email", 11, "carol@partner.example"),
        ("email", 13, "dave@partner.example"),
        ("email", 14, "o,brien@partner.example"),
    ]


def test_vcard_problems_are_reported_with_line_numbers():
    text = ("stray text\n"
            "END:VCARD\n"
            "BEGIN:VCARD\nEMAIL:ok@partner.example\nEND:VCARD\n"
            "BEGIN:VCARD\nEMAIL:lost@partner.example\n")
    got = events(text)
    assert got[0] == ("error", 1, "not a vCard property line (NAME:VALUE)")
    assert got[1] == ("error", 2, "END:VCARD without BEGIN:VCARD")
    assert got[2] == ("email", 4, "ok@partner.example")
    assert got[3][:2] == ("error", 6) and "without END:VCARD" in got[3][2]
    assert len(got) == 4     # the truncated card's address is not used


# --- message files ------------------------------------------------------------------------


def test_split_message_as_an_mta_passes_it():
    raw = (b"From: a@example.net\nSubject: folded\n\tsecond line\nX-Empty:\n\nBody line\n"
           b"\nmore\n")
    headers, body = split_message(raw)
    assert headers == [("From", b" a@example.net"), ("Subject", b" folded\n\tsecond line"),
                       ("X-Empty", b"")]
    assert body == b"Body line\r\n\r\nmore\r\n"


def test_a_line_that_is_not_a_header_starts_the_body():
    headers, body = split_message(b"From: a@example.net\r\nnot a header\r\nrest\r\n")
    assert headers == [("From", b" a@example.net")]
    assert body == b"not a header\r\nrest\r\n"


def test_build_message_crlf_raw_and_truncation():
    message = build_message(b"From: a@example.net\nSubject: x\n y\n\nbody\n", max_size=100)
    assert message.headers == (("From", "a@example.net"), ("Subject", "x\n y"))
    assert message.raw == b"From: a@example.net\r\nSubject: x\r\n y\r\n\r\nbody\r\n"
    assert not message.truncated
    big = build_message(b"From: a@example.net\n\n" + b"x" * 200, max_size=100)
    assert big.truncated and big.raw.endswith(b"\r\n\r\n")


# --- progress -----------------------------------------------------------------------------


def test_progress_draws_only_when_enabled():
    stream = io.StringIO()
    quiet = Progress(1000, stream, enabled=False)
    quiet.update(500)
    quiet.write("f.txt:1: bad; skipped")
    quiet.finish(1000)
    assert stream.getvalue() == "f.txt:1: bad; skipped\n"    # the lines, no bar
    assert Progress(10, io.StringIO()).enabled is False      # not a terminal


def test_progress_bar_never_runs_into_the_error_lines():
    """tqdm clears the bar before each reported line and redraws it after: on screen (the
    text after the last CR of each line) every error line stands alone."""
    stream = io.StringIO()
    bar = Progress(1000, stream, enabled=True, label="import ip")
    reporter = Reporter("f.txt", write=bar.write)
    for done in range(100, 1001, 100):
        bar.update(done)
        reporter.reject(done // 100, "expected PREFIX")
    bar.finish(1000)
    screen = [line.split("\r")[-1] for line in stream.getvalue().split("\n")]
    errors = [f"f.txt:{n}: expected PREFIX; skipped" for n in range(1, 11)]
    assert [line for line in screen if "f.txt" in line] == errors
    assert "import ip: 100%" in screen[-2] and screen[-1] == ""


def test_explain_and_the_milter_build_the_same_message():
    """One builder: a message split by explain and the same bytes fed as the milter's
    callbacks would be (value after the colon, folded lines, body in chunks)."""
    from mx6milter.ctl.explain import build_message
    from mx6milter.model import MessageBuilder
    raw = (b"From: A <a@example.com>\r\nSubject: two\r\n\tlines\r\nX-8bit: \xc3\xa9\r\n"
           b"\r\nbody line 1\r\nbody line 2\r\n")
    callbacks = MessageBuilder(1000)
    callbacks.add_header("From", b" A <a@example.com>")
    callbacks.add_header("Subject", b" two\n\tlines")
    callbacks.add_header("X-8bit", b" \xc3\xa9")
    callbacks.add_body(b"body line 1\r\n")
    callbacks.add_body(b"body line 2\r\n")
    assert build_message(raw, 1000) == callbacks.build()
    small = MessageBuilder(20)
    small.add_body(b"x" * 15)
    small.add_body(b"y" * 15)
    small.add_body(b"z")
    built = small.build()
    assert built.truncated and built.raw == b"\r\n" + b"x" * 15
