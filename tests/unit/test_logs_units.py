"""Log records for journald and log shippers: key=value that parses back, JSON, priorities."""
from __future__ import annotations

import io
import json
import logging
import re

from hypothesis import given
from hypothesis import strategies as st

from mx6milter.config import PolicySection
from mx6milter.evaluate import Outcome
from mx6milter.logs import (JournalFormatter, JsonFormatter, decision_fields, format_kv, kv_value,
                            priority)
from mx6milter.model import Evidence, Finding, Session, SessionClass
from mx6milter.policy import decide

TOKEN = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')


def parse_logfmt(line: str) -> dict:
    """A strict logfmt reader: every character of LINE must belong to a key=value pair."""
    fields, pos = {}, 0
    while pos < len(line):
        m = TOKEN.match(line, pos)
        assert m, f"unparseable at {pos}: {line[pos:pos + 40]!r}"
        key, value = m.groups()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        assert key not in fields, key
        fields[key] = value
        pos = m.end()
    return fields


def sanitised(text: str) -> str:
    return "".join(ch if " " <= ch <= "~" else "_" for ch in text)


@given(st.text(max_size=80))
def test_any_value_reads_back_whole(text):
    line = f"a=1 b={kv_value(text)} c=2"
    assert parse_logfmt(line) == {"a": "1", "b": sanitised(text), "c": "2"}
    assert "\n" not in line and "\r" not in line


def outcome(helo_checks=(), reasons_failures=()) -> Outcome:
    evidence = Evidence(SessionClass.IPV6,
                        checks=(Finding("session", "ipv6", "2001:db8::1"),
                                Finding("spf", "fail", "x@example.net"), *helo_checks),
                        failures=reasons_failures)
    return Outcome(evidence, decide(PolicySection(), evidence), None, 3.25)


HOSTILE_HELO = 'evil "host" name=x\\y\r\nX-Injected: 1 \udcff\u00e9'


def test_a_decision_line_parses_back_with_hostile_values():
    session = Session(client_ip="2001:db8::1", helo=HOSTILE_HELO, mail_from='a b"=@example.net',
                      recipients=["u@example.org"], queue_id="4ABC")
    result = outcome((Finding("fcrdns", "miss", "no PTR"),), ("dns-unavailable",))
    line = format_kv(decision_fields(session, result))
    fields = parse_logfmt(line)
    assert list(fields) == ["queue_id", "client", "helo", "from", "rcpts", "checks", "verdict",
                            "action", "reasons", "reply", "ms"]
    assert fields["helo"] == 'evil "host" name=x\\y__X-Injected: 1 __'
    assert fields["from"] == '<a b"=@example.net>'
    assert fields["client"] == "[2001:db8::1]"
    assert fields["checks"] == "session=ipv6(2001:db8::1),spf=fail(x@example.net),fcrdns=miss(no PTR)"
    assert (fields["verdict"], fields["action"], fields["reasons"]) == ("none", "tempfail",
                                                                       "dns-unavailable")
    assert (fields["reply"], fields["ms"]) == ("451/4.4.3", "3.2")   # evidence not gathered: 4.4.3


def test_values_are_clipped():
    session = Session(client_ip="2001:db8::1", helo="h" * 5000)
    assert len(decision_fields(session, outcome())["helo"]) == 200


def record_through(formatter: logging.Formatter, emit) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"mx6milter.test.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)   # whatever other tests set on "mx6milter"
    logger.addHandler(handler)
    emit(logger)
    return stream.getvalue()


def fail_with_a_traceback(logger):
    try:
        raise ValueError("line one\nline two")
    except ValueError:
        logger.exception("BUG in eom callback (queue id %s)", "4ABC")


def test_json_gives_one_object_per_decision():
    session = Session(client_ip="2001:db8::1", helo=HOSTILE_HELO, recipients=["u@example.org"])
    fields = decision_fields(session, outcome())
    text = record_through(JsonFormatter(), lambda log: log.info("%s", format_kv(fields),
                                                                 extra={"decision": fields}))
    assert text.count("\n") == 1 and text.isascii()
    entry = json.loads(text)
    assert entry["event"] == "decision" and entry["level"] == "info"
    assert entry["helo"] == 'evil "host" name=x\\y\r\nX-Injected: 1 \ufffd\u00e9'   # as sent
    assert entry["checks"] == ["session=ipv6(2001:db8::1)", "spf=fail(x@example.net)"]
    assert entry["reasons"] == ["not-authenticated"] and entry["rcpts"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_json_keeps_a_traceback_in_its_record():
    text = record_through(JsonFormatter(), fail_with_a_traceback)
    assert text.count("\n") == 1
    entry = json.loads(text)
    assert entry["level"] == "error" and entry["message"] == "BUG in eom callback (queue id 4ABC)"
    assert "Traceback" in entry["exception"] and "line one\nline two" in entry["exception"]


def test_journal_lines_carry_the_priority_and_a_traceback_is_one_line():
    formatter = JournalFormatter(logging.Formatter("mx6milter %(levelname)s %(message)s"))
    text = record_through(formatter, fail_with_a_traceback)
    assert text.startswith("<3>mx6milter ERROR BUG in eom callback")
    assert text.count("\n") == 1 and "Traceback (most recent call last):\\n" in text
    for level, number in ((logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4),
                          (logging.ERROR, 3), (logging.CRITICAL, 2)):
        assert priority(level) == number
        line = record_through(formatter, lambda log, level=level: log.log(level, "x"))
        assert line.startswith(f"<{number}>")
