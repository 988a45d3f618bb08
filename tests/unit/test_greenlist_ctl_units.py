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
