"""The fallback reply is safe for libmilter whatever goes into it. No I/O."""
import re

import Milter

from mx6milter.model import Reply
from mx6milter.reply import MAX_LINES, build_reply, sanitize_line

UNDOUBLED_PERCENT = re.compile(r"(?<!%)%(%%)*(?!%)")


def test_percent_doubled_and_controls_removed():
    assert sanitize_line("100%\r\nsure\t%s") == "100%% sure %%s"
    assert sanitize_line("caf\u00e9 \x00") == "caf? ?"


def test_long_text_wrapped_and_lines_bounded():
    reply = build_reply("451", "4.7.1", "x" * 1000, auth_results="a=b; " * 2000,
                        registration_url="https://example.org/" + "p" * 300)
    assert len(reply.lines) == MAX_LINES
    assert reply.lines[-1] == "(further lines omitted)"
    assert all(len(line) <= 480 for line in reply.lines)


def test_every_line_passes_pymilters_own_percent_check():
    reply = build_reply("451", "4.7.1", "50%% off %d " + "%" * 241, auth_results="x%y")
    for line in reply.lines:
        assert not UNDOUBLED_PERCENT.search(line), line
        assert "\r" not in line and "\n" not in line

    class Recorder(Milter.Base):
        def __init__(self):
            self.got = None

        def _setctx(self, ctx):
            pass

    recorder = Recorder()
    recorder._ctx = type("Ctx", (), {"setreply": lambda _s, *a: setattr(recorder, "got", a)})()
    recorder.setreply(reply.code, reply.status, *reply.lines)   # raises on an undoubled '%'
    assert recorder.got[0] == "451"


def test_as_smtp_is_what_the_client_sees():
    reply = Reply("451", "4.7.1", ("first 100%%", "second"))
    assert reply.as_smtp() == "451-4.7.1 first 100%\r\n451 4.7.1 second"


# --- properties over any input, and the limits as libmilter states them ------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

LIBMILTER_MAX_LINES = 32       # smfi_setmlreply: at most 32 lines (libmilter/smfi.c)
SMTP_MAX_REPLY_LINE = 512      # RFC 5321 4.5.3.1.5, CRLF included
hostile = st.lists(st.one_of(st.sampled_from(["%", "%%", "\r\n", "\n", "\t", "\x00", "~", "\u00e9",
                                              "-", " ", "x" * 300, "a-b-c"]),
                             st.text(max_size=40)), max_size=60).map("".join)
printable = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=3000)


@settings(max_examples=300, deadline=None)
@given(sentence=hostile, auth=hostile, url=hostile)
def test_any_reply_is_a_valid_libmilter_multiline_reply(sentence, auth, url):
    reply = build_reply("451", "4.7.1", sentence, auth_results=auth, registration_url=url)
    assert 1 <= len(reply.lines) <= LIBMILTER_MAX_LINES
    for line in reply.lines:
        assert not UNDOUBLED_PERCENT.search(line), line
        assert all(" " <= ch <= "~" for ch in line), line
        assert len(f"451-4.7.1 {line}\r\n".encode("ascii")) <= SMTP_MAX_REPLY_LINE
    for smtp_line in reply.as_smtp().split("\r\n"):
        assert re.fullmatch(r"451[- ]4\.7\.1 [ -~]*", smtp_line), smtp_line


@settings(max_examples=200, deadline=None)
@given(words=st.lists(printable, min_size=1, max_size=40))
def test_short_enough_text_survives_wrapping_and_doubling(words):
    sentence = " ".join(words)
    reply = build_reply("451", "4.7.1", sentence)
    if reply.lines[-1] == "(further lines omitted)":
        assert len(reply.lines) == LIBMILTER_MAX_LINES
        return
    rebuilt = "".join(line.replace("%%", "%") for line in reply.lines)
    assert rebuilt.replace(" ", "") == sentence.replace(" ", "")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_sanitize_line_is_one_printable_line_and_only_doubles_percent(text):
    line = sanitize_line(text)
    assert all(" " <= ch <= "~" for ch in line) and not UNDOUBLED_PERCENT.search(line)
    assert line.count("%") == 2 * text.count("%")
    assert len(line) == len(re.sub(r"[\r\n\t]+", " ", text)) + text.count("%")


def test_exactly_32_lines_are_kept_and_33_are_cut_to_32():
    sentence = " ".join(["w" * 240] * 32)
    reply = build_reply("451", "4.7.1", sentence)
    assert reply.lines == ("w" * 240,) * 32
    reply = build_reply("451", "4.7.1", sentence + " end")
    assert len(reply.lines) == 32
    assert reply.lines[:31] == ("w" * 240,) * 31 and reply.lines[31] == "(further lines omitted)"


def test_lines_are_240_characters_words_broken_only_when_longer():
    assert build_reply("451", "4.7.1", "y" * 240).lines == ("y" * 240,)
    assert build_reply("451", "4.7.1", "y" * 241).lines == ("y" * 240, "y")
    assert build_reply("451", "4.7.1", "a " * 120 + "b").lines == ("a " * 119 + "a", "b")


def test_hyphens_are_not_break_points_in_urls():
    url = "https://example.org/" + "long-" * 60
    lines = build_reply("451", "4.7.1", "s", registration_url=url).lines
    assert lines[1] == ("To be accepted over IPv6: " + url)[:240]
    assert "".join(lines[1:]) == "To be accepted over IPv6: " + url.rstrip()


def test_tilde_in_the_registration_url_is_kept():
    lines = build_reply("451", "4.7.1", "s", registration_url="https://example.org/~postmaster").lines
    assert lines == ("s", "To be accepted over IPv6: https://example.org/~postmaster")
    assert sanitize_line("~\x7f") == "~?"


def test_empty_parts_are_left_out_and_an_empty_sentence_is_one_empty_line():
    assert build_reply("451", "4.7.1", "").lines == ("",)
    assert build_reply("451", "4.7.1", "only").lines == ("only",)
    assert build_reply("451", "4.7.1", "s", auth_results="a; spf=none").lines == \
        ("s", "Authentication-Results: a; spf=none")


# --- the fast paths give what the plain definitions give --------------------------------

import textwrap  # noqa: E402

from mx6milter import reply as reply_module  # noqa: E402


def plain_sanitize_line(text: str) -> str:
    """sanitize_line as first written: a character at a time."""
    text = re.sub(r"[\r\n\t]+", " ", text)
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text).replace("%", "%%")


@settings(max_examples=1000, deadline=None)
@given(hostile)
def test_sanitize_line_is_the_plain_definition(text):
    assert sanitize_line(text) == plain_sanitize_line(text)


blanks_and_words = st.lists(st.sampled_from([" ", "  ", "\t", "\n", "a", "bc", "-", "%", "x" * 90,
                                             "\u00e9", "\x7f"]), max_size=12).map("".join)


single_spaced = st.lists(st.text(alphabet="ab-%~", min_size=1, max_size=30), max_size=20).map(" ".join)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(blanks_and_words, single_spaced), st.one_of(st.integers(1, 12), st.integers(1, 250)))
def test_wrap_is_textwraps(text, width):
    expected = textwrap.wrap(text, width=width, break_long_words=True,
                             break_on_hyphens=False) or [""]
    assert reply_module._wrap(text, width) == expected
