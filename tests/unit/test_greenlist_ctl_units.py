"""mx6ctl green|asnlist|mishandle4xx|import asn: the line parsers, no I/O."""
import pytest

from mx6milter.ctl.greenlist import AsnTable, GreenLineParser, parse_asn
from mx6milter.entries import EntryError


def test_asn_table_lines():
    table = AsnTable()
    entry = table.parse("2001:db8::\t32\t64500_64496,64500")
    assert entry.triple() == ("", "20010db8/32", "64496,64500 0")
    assert table.parse("10.0.0.0\t8\t64500") is None
    assert table.parse("   # only a comment") is None
    assert table.ipv4_skipped == 1
    for bad in ("2001:db8::\t32", "2001:db8::\tx\t64500", "2001:db8::\t32\t_",
                "::ffff:0:0\t96\t64500", "2001:db8::\t129\t64500", "2001:db8::\t32\t0"):
        with pytest.raises(EntryError):
            table.parse(bad)


def test_asn_numbers():
    assert parse_asn("AS64500") == parse_asn("as64500") == parse_asn("64500") == "64500"
    for bad in ("0", "AS", "4294967296", "AS-1", "64500x"):
        with pytest.raises(EntryError):
            parse_asn(bad)


def test_line_parser_options():
    parser = GreenLineParser("green", 1_000_000_000.0)
    assert parser.parse("2001:db8::/32 expires=1000000100").triple() == \
        ("", "20010db8/32", "1000000100")
    with pytest.raises(EntryError, match="unknown option"):
        parser.parse("2001:db8::/32 require=dkim")
    with pytest.raises(EntryError, match="expected PREFIX"):
        parser.parse("2001:db8::/32 2001:db9::/32")


# --- hostile lines: an entry, nothing, or an EntryError -------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

PIECES = ["2001:db8::", "::ffff:0:0", "10.0.0.0", "\t", " ", "32", "129", "\u00b2", "\u0664",
          "64500", "AS64500", "_", ",", "#", "expires=1d", "x=1", "partner.example", "/", "\udcff"]
hostile_line = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=8).map("".join)


@settings(max_examples=200, deadline=None)
@given(hostile_line)
def test_asn_table_lines_give_an_entry_none_or_an_entry_error(line):
    try:
        entry = AsnTable().parse(line)
    except EntryError:
        return
    if entry is not None:
        asns, expires = entry.value.split(" ")
        assert expires == "0" and all(0 < int(a) < 2 ** 32 for a in asns.split(","))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["green", "asnlist", "mishandle4xx"]), hostile_line)
def test_green_lines_give_an_entry_none_or_an_entry_error(kind, line):
    parser = GreenLineParser(kind, 1_000_000_000.0, is_public=lambda domain: "." not in domain)
    try:
        parser.parse(line)
    except EntryError:
        pass


@pytest.mark.parametrize("line", ["2001:db8::\t\u00b2\t64500", "2001:db8::\t\u0663\u0662\t64500",
                                  "2001:db8::\t32\t\u0664\u0665"])
def test_digits_that_are_not_ascii_are_refused(line):
    with pytest.raises(EntryError):
        AsnTable().parse(line)
