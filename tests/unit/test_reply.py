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
