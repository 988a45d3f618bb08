"""vCard files as address books export them (vcard.py): properties over generated and
hostile files, and the behaviour mutation testing found unpinned. No I/O."""
import pytest
from hypothesis import given, settings, strategies as st

from mx6milter import vcard


def events(text):
    return list(vcard.emails(enumerate(text.splitlines(), start=1)))


def emails_of(text):
    return [value for event, _number, value in events(text) if event == "email"]


address = st.builds("{}@{}.example".format, st.text("abc0._+-", min_size=1, max_size=8),
                    st.text("xyz9-", min_size=1, max_size=6))
other_property = st.sampled_from(["VERSION:3.0", "FN:Alice Example", "N:Example;Alice;;;",
                                  "TEL;TYPE=cell:+1 555 0100", "NOTE:a: colon; and \\, escapes",
                                  "item2.X-ABLabel:work", "ORG:Example\\; Inc.", ""])


@st.composite
def card(draw):
    """(lines, addresses) of one card: EMAIL lines in varied real-world forms among others."""
    addresses = draw(st.lists(address, max_size=4))
    lines = ["BEGIN:VCARD"]
    for value in addresses:
        lines += draw(st.lists(other_property, max_size=2))
        group = draw(st.sampled_from(["", "item1.", "A-b."]))
        name = draw(st.sampled_from(["EMAIL", "email", "Email"]))
        params = draw(st.sampled_from(["", ";TYPE=INTERNET", ";type=work,pref", ';PID="1:2"',
                                       ";INTERNET;PREF"]))
        shown = draw(st.sampled_from([value, "mailto:" + value, "MAILTO:" + value, " " + value]))
        lines.append(f"{group}{name}{params}:{shown}")
    lines += draw(st.lists(other_property, max_size=2))
    lines.append(draw(st.sampled_from(["END:VCARD", "end:vcard", "END:vcard "])))
    return lines, addresses


def fold(lines, cuts):
    """Each line cut where CUTS says, continued on a line starting with a space or tab."""
    out = []
    for line, (cut, blank) in zip(lines, cuts):
        cut = min(cut, len(line))
        if 0 < cut < len(line):
            out += [line[:cut], blank + line[cut:]]
        else:
            out.append(line)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(card(), max_size=4), st.sampled_from(["\n", "\r\n"]), st.data())
def test_every_address_of_every_complete_card_in_order_however_folded(cards, newline, data):
    lines = []
    for card_lines, _ in cards:
        lines += card_lines + data.draw(st.lists(st.just(""), max_size=2))   # blank lines between
    cuts = data.draw(st.lists(st.tuples(st.integers(0, 40), st.sampled_from([" ", "\t"])),
                              min_size=len(lines), max_size=len(lines)))
    text = newline.join(fold(lines, cuts)) + newline
    got = events(text)
    assert [value for event, _, value in got if event == "email"] == \
        [a for _, addresses in cards for a in addresses]
    assert [event for event, _, _ in got] == ["email"] * len(got)


@settings(max_examples=60, deadline=None)
@given(st.lists(card(), max_size=3), card(), st.integers(1, 40))
def test_a_card_cut_short_contributes_an_error_and_no_address(cards, last, keep):
    complete = [line for card_lines, _ in cards for line in card_lines]
    truncated = last[0][:-1][:keep]                       # never its END line
    got = events("\n".join(complete + truncated))
    assert [value for event, _, value in got if event == "email"] == \
        [a for _, addresses in cards for a in addresses]
    assert got[-1] == ("error", len(complete) + 1, "BEGIN:VCARD without END:VCARD "
                       "(truncated file?): its addresses are not used")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=60),
                          st.sampled_from(["BEGIN:VCARD", "END:VCARD", "EMAIL:", "EMAIL:=",
                                           "EMAIL;ENCODING=QUOTED-PRINTABLE:a=", "=", " ", "\t",
                                           "EMAIL;CHARSET=x-unknown;QUOTED-PRINTABLE:=C3=A9",
                                           "EMAIL;QUOTED-PRINTABLE:=ZZ", 'EMAIL;X="a:b', "\udcff",
                                           "AGENT:BEGIN:VCARD", "EMAIL:\\", "EMAIL:mailto:"])),
                max_size=30))
def test_any_lines_give_events_never_an_exception(lines):
    got = list(vcard.emails(enumerate(lines, start=1)))
    for event, number, value in got:
        assert event in ("email", "error") and 1 <= number <= len(lines)
        assert value and (event == "error" or value == value.strip())
    numbers = [number for event, number, _ in got if event == "email"]
    assert numbers == sorted(numbers)


# --- pinned behaviour ----------------------------------------------------------------------


def test_cards_after_blank_lines_and_whitespace_only_lines_are_read():
    text = ("BEGIN:VCARD\nEMAIL:a@x.example\nEND:VCARD\n\n  \n\t\n"
            "BEGIN:VCARD\n\nEMAIL:b@x.example\nEND:VCARD\n")
    assert events(text) == [("email", 2, "a@x.example"), ("email", 9, "b@x.example")]


def test_nested_cards_only_the_outer_cards_addresses_count():
    text = ("BEGIN:VCARD\nEMAIL:outer@x.example\nAGENT;VALUE=x:\nBEGIN:VCARD\n"
            "EMAIL:agent@x.example\nEND:VCARD\nEMAIL:outer2@x.example\nEND:VCARD\n"
            "EMAIL:after@x.example\n")
    assert events(text) == [("email", 2, "outer@x.example"), ("email", 7, "outer2@x.example"),
                            ("error", 9, "outside BEGIN:VCARD ... END:VCARD")]


def test_a_truncated_card_after_a_complete_one():
    text = "BEGIN:VCARD\nEMAIL:a@x.example\nEND:VCARD\nBEGIN:VCARD\nEMAIL:b@x.example\n"
    assert events(text) == [
        ("email", 2, "a@x.example"),
        ("error", 4, "BEGIN:VCARD without END:VCARD (truncated file?): its addresses are not used")]


@pytest.mark.parametrize("line, expected", [
    ("EMAIL;ENCODING=QUOTED-PRINTABLE:j=C3=B6rg@x.example", "j\u00f6rg@x.example"),
    ("EMAIL;quoted-printable:j=C3=B6rg@x.example", "j\u00f6rg@x.example"),
    ("EMAIL;CHARSET=ISO-8859-1;ENCODING=QUOTED-PRINTABLE:j=F6rg@x.example", "j\u00f6rg@x.example"),
    ("EMAIL;charset=iso-8859-1;QUOTED-PRINTABLE:j=F6rg@x.example", "j\u00f6rg@x.example"),
    ("EMAIL;CHARSET=x-nonesuch;QUOTED-PRINTABLE:j=F6rg@x.example", "j=F6rg@x.example"),
    ("EMAIL;QUOTED-PRINTABLE:j=F6rg@x.example", "j=F6rg@x.example"),     # not UTF-8: left as is
    ("EMAIL:j=C3=B6rg@x.example", "j=C3=B6rg@x.example"),                # not declared QP
    ("EMAIL:a\\nb\\Nc\\;d\\\\e@x.example", "a\nb\nc;d\\e@x.example"),
    ("EMAIL:mailto:m@x.example", "m@x.example"),
    ("EMAIL:MailTo:m@x.example", "m@x.example"),
    ("EMAIL: m@x.example ", "m@x.example"),
    ("EMAIL;TYPE=\"a:b;c\":q@x.example", "q@x.example"),
])
def test_values_are_decoded(line, expected):
    assert events(f"BEGIN:VCARD\n{line}\nEND:VCARD\n") == [("email", 2, expected)]


@pytest.mark.parametrize("line", ["EMAIL:", "EMAIL: ", "EMAIL:mailto:", "EMAIL;TYPE=x:  "])
def test_empty_addresses_are_no_events(line):
    assert events(f"BEGIN:VCARD\n{line}\nEND:VCARD\n") == []


def test_folding_forms():
    lines = [(1, "BEGIN:VCARD\r\n"), (2, "EMAIL;ENCODING=QUOTED-PRINTABLE:a=\r\n"), (3, "b@x.example"),
             (4, "EMAIL:c@x.\r\n"), (5, " example"), (6, "EMAIL:d@x.=\n"), (7, "example"),
             (8, "END:VCARD")]
    assert list(vcard.unfold(lines)) == [
        (1, "BEGIN:VCARD"), (2, "EMAIL;ENCODING=QUOTED-PRINTABLE:ab@x.example"),
        (4, "EMAIL:c@x.example"), (6, "EMAIL:d@x.="), (7, "example"), (8, "END:VCARD")]
    assert list(vcard.unfold([])) == []
    assert list(vcard.unfold([(1, " x")])) == [(1, " x")]
    assert list(vcard.unfold([(1, "NOTE;QUOTED-PRINTABLE:a:b="), (2, "c")])) == \
        [(1, "NOTE;QUOTED-PRINTABLE:a:bc")]
    assert list(vcard.unfold([(1, "NOTE:a;QUOTED-PRINTABLE="), (2, "c")])) == \
        [(1, "NOTE:a;QUOTED-PRINTABLE="), (2, "c")]   # QP named in the value, not the parameters
    assert list(vcard.unfold([(1, "NOTE:x QUOTED-PRINTABLE:y="), (2, "c")])) == \
        [(1, "NOTE:x QUOTED-PRINTABLE:y="), (2, "c")]
    assert list(vcard.unfold([(1, 'EMAIL;PID="1:2";ENCODING=QUOTED-PRINTABLE:a='), (2, "b")])) == \
        [(1, 'EMAIL;PID="1:2";ENCODING=QUOTED-PRINTABLE:ab')]
    assert list(vcard.unfold([(1, "EMAIL:a@x.ex\r\n"), (2, "\tam\n"), (3, " \r\n"), (4, " ple")])) == \
        [(1, "EMAIL:a@x.example")]                   # tab and space folds, an empty continuation
    assert list(vcard.unfold([(1, "EMAIL:MAX@X.BOX\r\n")])) == [(1, "EMAIL:MAX@X.BOX")]
    assert list(vcard.unfold([(1, "NOTE:a \t\n")])) == [(1, "NOTE:a \t")]


def test_only_end_vcard_ends_a_card():
    text = ("BEGIN:VCARD\nNOTE:VCARD\nEND:VCALENDAR\nEMAIL:a@x.example\nEND:VCARD\n"
            "BEGIN:VCARD\nEMAIL:b@x.example\nEND:VCARD\n")
    assert events(text) == [("email", 4, "a@x.example"), ("email", 7, "b@x.example")]


@pytest.mark.parametrize("text, expected", [
    ("EMAIL:a@x.example\n", [("error", 1, "outside BEGIN:VCARD ... END:VCARD")]),
    ("END:VCARD\n", [("error", 1, "END:VCARD without BEGIN:VCARD")]),
    ("BEGIN:VCARD\nno colon here\nEND:VCARD\n",
     [("error", 2, "not a vCard property line (NAME:VALUE)")]),
    ("BEGIN:VCARD\nbad name:x\nEMAIL:a@x.example\nEND:VCARD\n",
     [("error", 2, "not a vCard property line (NAME:VALUE)"), ("email", 3, "a@x.example")]),
    ("BEGIN:VCARDS\nEMAIL:a@x.example\nEND:VCARD\n",
     [("error", 1, "outside BEGIN:VCARD ... END:VCARD"),
      ("error", 2, "outside BEGIN:VCARD ... END:VCARD"),
      ("error", 3, "END:VCARD without BEGIN:VCARD")]),
    ("begin:vcard \nEMAIL:a@x.example\nend: VCARD\n", [("email", 2, "a@x.example")]),
    ("BEGIN:VCARD\nEMAIL:a@x.example\n END:VCARD\n",            # a folded line, not the end
     [("error", 1, "BEGIN:VCARD without END:VCARD (truncated file?): its addresses are not used")]),
])
def test_structure_errors(text, expected):
    assert events(text) == expected
