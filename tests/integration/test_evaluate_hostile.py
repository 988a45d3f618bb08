"""Forged Authentication-Results and hostile messages through the whole milter path
(tests/support/harness.py run_milter, real DNS and Redis): safe verdicts, never a crash."""
import logging

import Milter
import pytest

from mx6milter.model import Message, Session

from dkimkeys import message
from harness import run_milter

POLICY = "[policy]\nauthserv_id = mx.example.org\n"


@pytest.fixture
def evaluator(evaluator_factory):
    evaluator = evaluator_factory(POLICY)
    evaluator.store.add("domain", "local", [("", "example.com", "dmarc 0")])
    return evaluator


# --- forged Authentication-Results -------------------------------------------------------


FORGED = (
    b"Authentication-Results: mx.example.org; dkim=pass header.d=example.com",      # 1: ours
    b"Authentication-Results: other.example; spf=pass smtp.mailfrom=a@example.com",  # 2: foreign
    b"Authentication-Results: (sneaky) MX.EXAMPLE.ORG.; garbage !!!",                # 3: ours
    b"Authentication-Results: mx.example.org.evil.example; dkim=pass",               # 4: foreign
    b'Authentication-Results: "mx.example.org";\r\n\tdmarc=pass header.from=example.com',  # 5
)


@pytest.mark.parametrize("client_ip", ["2001:db8:99::1", "192.0.2.1"])
def test_forged_authentication_results_removed_foreign_kept(evaluator, client_ip):
    result = run_milter(evaluator, message(extra=FORGED), client_ip=client_ip,
                        mail_from="x@example.com")
    # reverse order: Postfix renumbers the headers after each delete
    assert result.changed == [("Authentication-Results", 5, ""),
                              ("Authentication-Results", 3, ""),
                              ("Authentication-Results", 1, "")]


def test_forged_pass_claims_do_not_count_as_evidence(evaluator):
    # the forged headers say example.com passed; nothing really authenticates it
    result = run_milter(evaluator, message(extra=FORGED), client_ip="2001:db8:99::1",
                        mail_from="x@example.com")
    assert result.rc == Milter.TEMPFAIL


def test_our_header_is_added_on_top_once_forgeries_are_gone(evaluator, dkim_keys):
    raw = dkim_keys.sign(message(extra=FORGED[:2]), "example.com", "rsa")
    result = run_milter(evaluator, raw, client_ip="2001:db8:99::1", mail_from="x@esp.example")
    assert result.rc == Milter.ACCEPT       # the forged header was not signed: DKIM still passes
    assert result.changed == [("Authentication-Results", 1, "")]
    added = [(name, index) for name, _value, index in result.added]
    assert ("Authentication-Results", 0) in added
    assert result.header("Authentication-Results").startswith("mx.example.org; spf=fail")


# --- hostile messages ------------------------------------------------------------------


def _hostile_messages(dkim_keys):
    good = dkim_keys.sign(message(), "example.com", "rsa")
    return {
        "garbage DKIM-Signature": b"DKIM-Signature: v=1; a=rsa-sha256; d=; b=!!\r\n" + good,
        "DKIM-Signature with 8-bit domain":
            b"DKIM-Signature: v=1; a=rsa-sha256; d=\xff\xfe.example; s=\x00; h=from; b=A; bh=A\r\n"
            + good,
        "DKIM-Signature of 100 KB": b"DKIM-Signature: " + b"x=" + b"A" * 100000 + b"\r\n" + good,
        "header without colon": b"This line has no colon\r\n" + good,
        "8-bit headers": message(subject="Gr\u00fc\u00dfe", extra=(b"X-Bytes: \xff\xfe\x80",)),
        "8-bit From": message(extra=()).replace(b"From: Alice <alice@example.com>",
                                                b"From: \xff\xfe <al\xffce@exa\xffmple.com>"),
        "huge From": message(from_="A" * 100000 + " <alice@example.com>"),
        "From with 50000 nested comments": message(from_="(" * 50000 + "alice@example.com"),
        "From with no domain": message(from_="alice"),
        "From with empty address": message(from_="<>"),
        "no From at all": b"To: user@example.org\r\nSubject: x\r\n\r\nbody\r\n",
        "two From headers": message(extra=(b"From: bob@example.net",)),
        "Unicode local part": message(from_="J\u00f6rg <j\u00f6rg@example.com>"),
        "Unicode domain that is not IDNA": message(from_="a@\u2603\u200d.example"),
        "empty message": b"\r\n",
        "only a body": b"\r\n\r\nbody only\r\n",
    }


def test_hostile_messages_get_a_safe_verdict_never_a_crash(evaluator, dkim_keys, caplog):
    with caplog.at_level(logging.INFO):
        for name, raw in _hostile_messages(dkim_keys).items():
            for client_ip in ("2001:db8:99::1", "2001:db8:10::99"):
                result = run_milter(evaluator, raw, client_ip=client_ip,
                                    mail_from="x@example.com", rcpts=("user@example.org",))
                assert result.rc in (Milter.ACCEPT, Milter.TEMPFAIL), name
                if result.rc == Milter.TEMPFAIL:     # the status says why: authenticated or not
                    assert result.reply[:2] in (("451", "4.7.1"), ("451", "4.7.26")), (name, result.reply)
                    assert all(line.isascii() and "\r" not in line and "\n" not in line
                               for line in result.reply), name
    assert caplog.text.count("verdict=none") + caplog.text.count("verdict=whitelisted") == \
        2 * len(_hostile_messages(dkim_keys))         # every message was judged, and logged
    assert "BUG" not in caplog.text
    assert "Traceback" not in caplog.text


def test_header_without_colon_in_a_raw_message_for_explain(evaluator, dkim_keys):
    # mx6ctl explain hands the evaluator a message file as it is, not parsed by an MTA
    raw = b"This line has no colon\r\n" + dkim_keys.sign(message(), "example.com", "rsa")
    session = Session(client_ip="2001:db8:99::1", helo="h.example", mail_from="x@example.com",
                      recipients=["user@example.org"])
    outcome = evaluator.evaluate(session, Message(
        headers=(("From", "Alice <alice@example.com>"),), raw=raw))
    assert [d.result for d in outcome.auth.dkim] == ["permerror"]
    assert outcome.decision.reply.code == "451"


@pytest.mark.parametrize("mail_from, helo", [
    ("a" * 1000 + "@example.com", "h"), ("x@" + "a." * 200 + "com", "h"), ("", "\xff" * 300),
    ("j\u00f6rg@b\u00fccher.example", "[2001:db8::1]"), ("@", ""), ("x@[2001:db8::1]", "h"),
])
def test_hostile_envelopes(evaluator, mail_from, helo):
    result = run_milter(evaluator, message(), client_ip="2001:db8:99::1", helo=helo,
                        mail_from=mail_from)
    assert result.rc == Milter.TEMPFAIL and result.reply[:2] == ("451", "4.7.26")


def test_many_recipients_with_unparseable_ones(evaluator, dkim_keys):
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    rcpts = tuple(f"user{i}@example.org" for i in range(50)) + ("not an address", "")
    result = run_milter(evaluator, raw, client_ip="2001:db8:99::1", mail_from="x@esp.example",
                        rcpts=rcpts)
    assert result.rc == Milter.ACCEPT       # the domain whitelist does not depend on recipients


# --- hostile data in Redis ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["dkim", "dkim soon", "any 12abc", "\x00", "dkim -5 x"])
def test_unreadable_entries_in_redis_never_crash_and_never_count(evaluator_factory, dkim_keys,
                                                                 value, caplog):
    evaluator = evaluator_factory(POLICY)
    evaluator.store.add("domain", "local", [("", "example.com", value)])
    evaluator.store.add("ab", "local", [("user@example.org", "alice@example.com", value)])
    raw = dkim_keys.sign(message(), "example.com", "rsa")
    with caplog.at_level(logging.INFO):
        result = run_milter(evaluator, raw, client_ip="2001:db8:99::1", mail_from="x@esp.example")
    assert "BUG" not in caplog.text
    assert result.rc == Milter.TEMPFAIL and result.reply[:2] == ("451", "4.7.1")
