"""mx6ctl's command-line conventions, held for every verb by walking the parser (so a
new verb is held to them too): help text on every argument, one or two examples at
the end of each verb's --help that the parser accepts, --version, completion made
from the parser. And the pure parts of import, export and explain behind them."""
from __future__ import annotations

import argparse
import contextlib
import io
import shlex

import pytest
from hypothesis import given, strategies as st

from mx6milter import __version__
from mx6milter.ctl import build_parser
from mx6milter.ctl.explain import accepting_commands
from mx6milter.ctl.greenlist import AsnTable, GreenLineParser, export_line
from mx6milter.ctl.import_export import csv_delimiter, parse_csv
from mx6milter.config import GreenlistSection
from mx6milter.entries import LineParser, parse_expiry, value_expiry

NOW = 1_800_000_000


def verbs() -> dict:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def run(*argv: str) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    return exit_info.value.code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_every_argument_of_every_verb_has_help(verb):
    parser = verbs()[verb]
    missing = [action.dest for action in parser._actions if not (action.help or "").strip()]
    assert missing == [], f"mx6ctl {verb}: no help text for {missing}"


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_every_verbs_help_ends_with_examples_the_parser_accepts(verb):
    parser = verbs()[verb]
    assert 1 <= len(parser.examples) <= 2, f"mx6ctl {verb}: give one or two examples"
    help_text = parser.format_help()
    block = "\nexamples:\n" + "".join(f"  {example}\n" for example in parser.examples)
    assert help_text.endswith(block)
    for example in parser.examples:
        words = shlex.split(example)
        words = words[:words.index(">")] if ">" in words else words
        assert words[:2] == ["mx6ctl", verb], example
        args = build_parser().parse_args(words[1:])        # exits (fails) if it does not parse
        assert args.command == verb and callable(args.func)


def test_version():
    assert run("--version") == (0, f"mx6ctl {__version__}\n", "")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_is_made_from_the_parser(shell):
    code, script, _ = run("--print-completion", shell)
    assert code == 0
    assert script.startswith("#compdef mx6ctl") if shell == "zsh" else "complete -o" in script
    for verb in verbs():
        assert verb in script, f"{shell} completion lacks {verb}"
    assert "--allow-rejects" in script and "--print-completion" in script


# --- import: CSV with ';' ---------------------------------------------------------------


@pytest.mark.parametrize("row, delimiter", [
    ("recipient,sender,expires", ","), ("recipient;sender;expires", ";"),
    ("alice@example.org;bob@partner.example", ";"), ("alice@example.org,bob@partner.example", ","),
    ('"a,b"@example.org;bob@partner.example', ";"), ("one-cell-only", ","),
])
def test_csv_delimiter(row, delimiter):
    assert csv_delimiter(row) == delimiter


@given(st.text(max_size=300))
def test_csv_delimiter_never_raises(text):
    assert csv_delimiter(text) in (",", ";")


def test_semicolon_csv_is_read_like_comma_csv():
    parser = LineParser("ab", NOW, lambda address: address.lower())
    lines = ["recipient;sender;expires", "alice@example.org;Bob@partner.example;",
             "carol@example.org;dave@partner.example;2027-01-31", "only-one-cell"]
    rows = list(parse_csv(enumerate(lines, start=1), parser))
    assert [(n, e.suffix if e else None, e.field if e else None) for n, e, _ in rows] == \
        [(2, "alice@example.org", "bob@partner.example"),
         (3, "carol@example.org", "dave@partner.example"), (4, None, None)]
    assert value_expiry(rows[1][1].value) == parse_expiry("2027-01-31", NOW)
    assert "expected recipient,sender[,expires], got 1 columns" in rows[2][2]


# --- export of the greenlist's kinds: what import reads back ------------------------------


@pytest.mark.parametrize("kind, word", [("green", "2001:db8:70::/48"), ("asnlist", "AS64500"),
                                        ("mishandle4xx", "2001:db8:9::/64"),
                                        ("mishandle4xx", "mail.oldsender.example")])
@pytest.mark.parametrize("expires", [0, NOW + 86400])
def test_greenlist_export_lines_import_back(kind, word, expires):
    parser = GreenLineParser(kind, NOW, is_public=lambda domain: False)
    entry = parser.entry(word, expires)
    line = export_line(kind, entry.field, entry.value)
    again = GreenLineParser(kind, NOW, is_public=lambda domain: False).parse(line)
    assert (again.field, again.value) == (entry.field, entry.value)


def test_asn_export_lines_import_back():
    table = AsnTable(expires=0)
    entry = table.parse("2001:db8:70::\t44\t64500_64501")
    line = export_line("asn", entry.field, entry.value)
    assert line == "2001:db8:70::\t44\t64500_64501"
    assert AsnTable(expires=0).parse(line) == entry


# --- explain: what would have accepted a fallback -------------------------------------------


def explained(**changes) -> dict:
    result = {"session": {"client_ip": "2001:db8::25", "judged": True,
                          "recipients": ["alice@example.org", "carol@example.org"]},
              "tier": "none", "checks": [],
              "authenticated_domains": {"dkim": ["partner.example", "esp.example"],
                                        "spf": ["bounces.esp.example"],
                                        "dmarc": ["partner.example"]},
              "from_address": "bob@partner.example",
              "addressbook": [{"recipient": "alice@example.org", "knows_sender": True},
                              {"recipient": "carol@example.org", "knows_sender": False}]}
    result.update(changes)
    return result


def test_a_fallback_lists_the_commands_that_would_accept_it():
    rows = accepting_commands(explained(), "-c /etc/mx6.conf", GreenlistSection())
    assert [row["command"] for row in rows] == [
        "mx6ctl -c /etc/mx6.conf ip add 2001:db8::25",
        "mx6ctl -c /etc/mx6.conf domain add partner.example",
        "mx6ctl -c /etc/mx6.conf domain add esp.example --require dkim",
        "mx6ctl -c /etc/mx6.conf domain add bounces.esp.example --require spf",
        "mx6ctl -c /etc/mx6.conf addressbook add carol@example.org bob@partner.example",
        "mx6ctl -c /etc/mx6.conf green add 2001:db8::25"]
    assert rows[-1]["tier"].startswith("greenlisted")


def test_no_addressbook_command_without_an_aligned_from_and_no_green_when_it_would_not_do():
    result = explained(authenticated_domains={"dkim": [], "spf": [], "dmarc": []})
    rows = accepting_commands(result, "", GreenlistSection(min_signals=2))
    assert [row["command"] for row in rows] == ["mx6ctl ip add 2001:db8::25"]
    assert accepting_commands(result, "", GreenlistSection(networks=False))[-1]["command"] == \
        "mx6ctl ip add 2001:db8::25"


@pytest.mark.parametrize("changes", [{"tier": "whitelisted"}, {"tier": "greenlisted"},
                                     {"session": {"client_ip": "192.0.2.1", "judged": False,
                                                  "recipients": []}}])
def test_nothing_to_suggest_unless_a_judged_message_fell_back(changes):
    assert accepting_commands(explained(**changes), "", GreenlistSection()) == []
