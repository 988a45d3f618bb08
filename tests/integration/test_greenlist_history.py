"""The From domain's IPv4 history: recorded from real IPv4 sessions, used over IPv6.

Real BIND (greenlist.example publishes SPF for 198.51.100.80/29 and
2001:db8:8::/48) and real Redis. Days come from an injected clock, not sleep.
"""
import threading
import time

import Milter
import pytest

from mx6milter.dns import Resolver
from mx6milter.evaluate import Evaluator
from mx6milter.evidence.greenlist import Greenlist
from mx6milter.evidence.history import DAY
from mx6milter.model import Message, Session, Tier
from mx6milter.store import Store

from conftest import make_config
from harness import run_milter

HISTORY = ("[greenlist]\nhistory = yes\nfcrdns = no\nhistory_min_messages = 3\n"
           "history_min_days = 2\nhistory_expiry_days = 30\n")
START = 1_800_000_000.0          # an arbitrary day; the tests move through days from it


def message(domain="greenlist.example", number=1):
    return (f"From: Sender <sender@{domain}>\r\nTo: user@example.org\r\n"
            f"Subject: hello {number}\r\nMessage-ID: <{number}@{domain}>\r\n\r\n"
            f"Hello {number}.\r\n").encode()


class Clock:
    def __init__(self, now=START):
        self.now = now

    def __call__(self):
        return self.now

    def days_later(self, days):
        self.now += days * DAY


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def history_evaluator(evaluator_factory, clock):
    def build(text=HISTORY, nameservers=None):
        evaluator = evaluator_factory(text, nameservers)
        evaluator.greenlist = Greenlist(evaluator.config, evaluator.store, evaluator.resolver,
                                        evaluator.dmarc, clock=clock)
        return evaluator
    return build


def ipv4_session(evaluator, number, client_ip="198.51.100.80", domain="greenlist.example",
                 mail_from=None):
    result = run_milter(evaluator, message(domain, number), client_ip=client_ip,
                        helo=f"mail.{domain}", mail_from=mail_from or f"sender@{domain}")
    assert evaluator.greenlist.recorder.flush(10)
    return result


def ipv6_decision(evaluator, client_ip="2001:db8:8::50", domain="greenlist.example"):
    raw = message(domain, 99)
    session = Session(client_ip=client_ip, helo="mail.example.invalid",
                      mail_from=f"sender@{domain}", recipients=["user@example.org"])
    return evaluator.evaluate(session, Message(headers=(("From", f"Sender <sender@{domain}>"),),
                                               raw=raw))


def history_finding(outcome):
    found = [f for f in outcome.evidence.checks if f.kind == "history"]
    assert len(found) == 1, outcome.evidence.checks
    return found[0]


# --- learnt through the milter, used over IPv6 -------------------------------------------


def test_history_learnt_from_ipv4_sessions_then_greenlists_ipv6(history_evaluator, clock):
    evaluator = history_evaluator()
    before = ipv6_decision(evaluator)
    assert before.decision.tier is Tier.NONE
    assert str(history_finding(before)) == "history=miss(greenlist.example)"
    for number, day in enumerate((0, 1, 2), start=1):
        clock.now = START + day * DAY
        result = ipv4_session(evaluator, number)
        assert result.rc == Milter.ACCEPT
        assert result.added == [] and result.changed == []    # IPv4 mail untouched
    entry = evaluator.greenlist.history.read("greenlist.example")
    assert (entry.count, entry.span_days) == (3, 2)
    assert entry.first_day == int(START // DAY)
    outcome = ipv6_decision(evaluator)
    assert outcome.decision.tier is Tier.GREENLISTED
    assert [str(f) for f in outcome.evidence.greenlist] == \
        ["history=pass(greenlist.example messages=3 days=2 via=spf)"]
    result = run_milter(evaluator, message(), client_ip="2001:db8:8::50",
                        helo="mail.example.invalid", mail_from="sender@greenlist.example")
    assert result.rc == Milter.ACCEPT
    assert result.header("X-MX6-Verdict").startswith(
        "greenlisted; subject-to-content-filtering; evidence=history=pass(greenlist.example "
        "messages=3 days=2 via=spf)")


def test_unauthenticated_ipv4_mail_is_not_recorded(history_evaluator):
    evaluator = history_evaluator()
    # 203.0.113.9 is outside greenlist.example's SPF: SPF fails, nothing aligned
    result = ipv4_session(evaluator, 1, client_ip="203.0.113.9")
    assert result.rc == Milter.ACCEPT
    assert evaluator.greenlist.history.read("greenlist.example") is None
    assert evaluator.greenlist.recorder.recorded == 0


def test_unaligned_ipv4_mail_is_not_recorded(history_evaluator):
    # SPF passes for other.greenlist.example's MAIL FROM, but From is example.net: not aligned
    evaluator = history_evaluator()
    raw = message("example.net", 1)
    run_milter(evaluator, raw, client_ip="198.51.100.88", helo="mx.other.greenlist.example",
               mail_from="bounce@other.greenlist.example")
    assert evaluator.greenlist.recorder.flush(10)
    assert evaluator.greenlist.history.read("example.net") is None
    assert evaluator.greenlist.history.read("other.greenlist.example") is None


def test_relaxed_alignment_without_dmarc_record_is_recorded(history_evaluator):
    # other.greenlist.example publishes SPF but no DMARC record of its own;
    # greenlist.example's p=none applies as the organisational domain
    evaluator = history_evaluator()
    ipv4_session(evaluator, 1, client_ip="198.51.100.88", domain="other.greenlist.example")
    assert evaluator.greenlist.history.read("other.greenlist.example").count == 1


def test_ipv4_mapped_client_is_recorded_as_ipv4(history_evaluator):
    evaluator = history_evaluator()
    result = ipv4_session(evaluator, 1, client_ip="::ffff:198.51.100.81")
    assert result.rc == Milter.ACCEPT
    assert evaluator.greenlist.history.read("greenlist.example").count == 1


def test_history_off_ipv4_body_not_read(evaluator_factory):
    result = run_milter(evaluator_factory("[greenlist]\nhistory = no\n"), message(),
                        client_ip="198.51.100.80")
    assert result.rc == Milter.ACCEPT
    assert result.stage == "eoh"


def test_history_is_on_by_default(evaluator_factory):
    evaluator = evaluator_factory()
    assert evaluator.config.greenlist.history and evaluator.greenlist.recorder is not None


def test_a_domain_counted_enough_today_is_not_read_again_until_tomorrow(history_evaluator, clock):
    evaluator = history_evaluator()                 # history_min_messages = 3
    recorder = evaluator.greenlist.recorder
    stages = [ipv4_session(evaluator, n).stage for n in range(1, 6)]
    assert stages == ["eom", "eom", "eom", "eoh", "eoh"]     # counted 3 times, then skipped
    assert evaluator.greenlist.history.read("greenlist.example").count == 3
    assert (recorder.recorded, recorder.skipped) == (3, 2)
    other = ipv4_session(evaluator, 6, client_ip="198.51.100.88", domain="other.greenlist.example")
    assert other.stage == "eom"                      # another domain is read as before
    clock.days_later(1)
    assert [ipv4_session(evaluator, n).stage for n in (7, 8)] == ["eom", "eoh"]
    entry = evaluator.greenlist.history.read("greenlist.example")
    assert (entry.count, entry.span_days) == (4, 1)  # the new day counted once: span current


def test_unauthenticated_messages_of_a_domain_never_make_it_skipped(history_evaluator):
    evaluator = history_evaluator()
    stages = [ipv4_session(evaluator, n, client_ip="203.0.113.9").stage for n in range(1, 6)]
    assert stages == ["eom"] * 5                     # SPF fails: nothing counted, so read each
    assert evaluator.greenlist.history.read("greenlist.example") is None


def test_a_message_without_one_from_address_is_not_read(history_evaluator):
    evaluator = history_evaluator()
    raw = (b"From: a@greenlist.example, b@greenlist.example\r\nSubject: two\r\n\r\nHi.\r\n")
    result = run_milter(evaluator, raw, client_ip="198.51.100.80", helo="mail.greenlist.example",
                        mail_from="a@greenlist.example")
    assert (result.rc, result.stage) == (Milter.ACCEPT, "eoh")


# --- thresholds and authentication on the IPv6 message ----------------------------------------


def record(evaluator, clock, domain, days):
    for day in days:
        clock.now = START + day * DAY
        evaluator.greenlist.history.record(domain)


def test_below_message_threshold(history_evaluator, clock):
    evaluator = history_evaluator()
    record(evaluator, clock, "greenlist.example", (0, 5))          # 2 messages, 5 days
    outcome = ipv6_decision(evaluator)
    assert outcome.decision.tier is Tier.NONE
    assert str(history_finding(outcome)) == \
        "history=below-threshold(greenlist.example messages=2 days=5 needs messages=3 days=2)"


def test_below_day_threshold(history_evaluator, clock):
    evaluator = history_evaluator()
    record(evaluator, clock, "greenlist.example", (0, 0, 1, 1, 1))  # 5 messages, 1 day apart
    outcome = ipv6_decision(evaluator)
    assert outcome.decision.tier is Tier.NONE
    assert history_finding(outcome).result == "below-threshold"


def test_history_domain_failing_authentication_on_ipv6_is_not_greenlisted(history_evaluator, clock):
    evaluator = history_evaluator()
    record(evaluator, clock, "greenlist.example", (0, 1, 2, 3))
    # 2001:db8:9::1 is outside greenlist.example's SPF: the From domain fails over IPv6
    outcome = ipv6_decision(evaluator, client_ip="2001:db8:9::1")
    assert outcome.decision.tier is Tier.NONE
    assert outcome.evidence.greenlist == ()
    assert str(history_finding(outcome)) == ("history=unauthenticated(greenlist.example messages=4 "
                                             "days=3; From not authenticated now)")


def test_history_switched_off_is_not_consulted(history_evaluator, clock):
    evaluator = history_evaluator("[greenlist]\nfcrdns = no\nhistory = no\n")
    record(evaluator, clock, "greenlist.example", (0, 1, 2, 3, 4, 20))
    outcome = ipv6_decision(evaluator)
    assert outcome.decision.tier is Tier.NONE
    assert not [f for f in outcome.evidence.checks if f.kind == "history"]


# --- memory bounds: expiry and the queue ---------------------------------------------------------


def test_each_domain_expires_after_its_last_message(history_evaluator, clock, redis_server):
    evaluator = history_evaluator()
    record(evaluator, clock, "greenlist.example", (0, 10))
    history = evaluator.greenlist.history
    ttl = redis_server.client().ttl("mx6:v1:history:ipv4:greenlist.example")
    assert 30 * DAY - 5 <= ttl <= 30 * DAY                          # refreshed by the last write
    entry = history.read("greenlist.example")
    assert entry.expires == int(START) + 10 * DAY + 30 * DAY
    # past that expiry the lookup ignores it, even before Redis drops the key
    evaluator.store.clock = lambda: entry.expires + 1
    assert history_finding(ipv6_decision(evaluator)).result == "miss"


def test_full_queue_drops_but_ipv4_still_accepted(history_evaluator):
    evaluator = history_evaluator(HISTORY + "history_queue_size = 100\n")
    result = run_milter(evaluator, message(), client_ip="198.51.100.80",
                        helo="mail.greenlist.example", mail_from="sender@greenlist.example")
    assert result.rc == Milter.ACCEPT
    assert evaluator.greenlist.recorder.flush(10)
    assert evaluator.greenlist.recorder.dropped == 1
    assert evaluator.greenlist.history.read("greenlist.example") is None


def answered_before_recorded(recorder, send) -> list:
    """Hold the recorder's worker until SEND has returned; the order the two happened in.
    Were the recording (its DNS and Redis work) on the SMTP path, SEND would wait for it."""
    gate, order, handle = threading.Event(), [], recorder.handle

    def held(items):
        gate.wait(10)
        order.append("recorded")
        handle(items)
    recorder.handle = held
    result = send()
    order.append("answered")
    gate.set()
    assert result.rc == Milter.ACCEPT
    assert recorder.flush(15)
    return order


def test_redis_down_ipv4_still_accepted_without_waiting(dns_server, clock):
    config = make_config(HISTORY, "redis://127.0.0.1:1/0", dns_server.nameservers)
    store = Store.from_config(config.redis)
    evaluator = Evaluator(config, store, Resolver.from_config(config.dns))
    order = answered_before_recorded(evaluator.greenlist.recorder, lambda: run_milter(
        evaluator, message(), client_ip="198.51.100.80", helo="mail.greenlist.example",
        mail_from="sender@greenlist.example"))
    assert order == ["answered", "recorded"]     # recording is not on the SMTP path
    assert evaluator.greenlist.recorder.failed == 1
    assert evaluator.greenlist.recorder.recorded == 0


def test_redis_down_pauses_the_recorder_and_gives_the_bytes_back(dns_server, caplog):
    config = make_config(HISTORY, "redis://127.0.0.1:1/0", dns_server.nameservers)
    evaluator = Evaluator(config, Store.from_config(config.redis),
                          Resolver.from_config(config.dns))
    recorder = evaluator.greenlist.recorder
    recorder.monotonic = lambda: 1000.0     # frozen: every message after the first is paused
    for number in (1, 2, 3):
        result = run_milter(evaluator, message(number=number), client_ip="198.51.100.80",
                            helo="mail.greenlist.example", mail_from="sender@greenlist.example")
        assert result.rc == Milter.ACCEPT
        assert recorder.flush(10)
    assert (recorder.failed, recorder.recorded) == (3, 0)
    assert evaluator.memory.held == 0            # the paused messages' bytes too
    lines = [r.getMessage() for r in caplog.records if r.name == "mx6milter.evidence.history"]
    assert len(lines) == 1 and lines[0].startswith("IPv4 history: Redis: ")
    assert lines[0].endswith(" (1 messages not recorded so far)")


def test_dead_dns_ipv4_still_accepted_without_waiting(history_evaluator):
    import socket
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        evaluator = history_evaluator(nameservers=f"127.0.0.1:{sock.getsockname()[1]}")
        order = answered_before_recorded(evaluator.greenlist.recorder, lambda: run_milter(
            evaluator, message(), client_ip="198.51.100.80", helo="mail.greenlist.example",
            mail_from="sender@greenlist.example"))
        assert order == ["answered", "recorded"]      # the DNS work is not on the SMTP path
        assert evaluator.greenlist.history.read("greenlist.example") is None
    finally:
        sock.close()


def test_recorder_thread_ends_when_idle(history_evaluator):
    evaluator = history_evaluator()
    recorder = evaluator.greenlist.recorder
    recorder.idle_seconds = 0.2
    ipv4_session(evaluator, 1)
    deadline = time.monotonic() + 5
    while recorder._worker is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder._worker is None
    ipv4_session(evaluator, 2)                    # started again on demand
    assert evaluator.greenlist.history.read("greenlist.example").count == 2
