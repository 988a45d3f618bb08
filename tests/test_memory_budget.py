"""The memory budget ([milter] max_buffered_bytes): the accountant, the builder, and
every path of a message through the milter in-process (pymilter's TestCtx)."""
import random
import threading

import Milter
import pytest

from harness import RecordingCtx, run_milter, split_message, to_crlf
from mx6milter.membudget import JUDGING_COPIES, MemoryBudget
from mx6milter.milter import Mx6Milter
from mx6milter.model import MessageBuilder

LINE = b"The quarterly figures, line after line, to make a message of some size.\r\n"


def message(size: int) -> bytes:
    head = (b"From: Alice <alice@example.com>\r\nTo: user@example.org\r\n"
            b"Subject: figures\r\nMessage-ID: <1@example.com>\r\n\r\n")
    return head + LINE * (size // len(LINE) + 1)


# --- the accountant -------------------------------------------------------------------


def test_reserve_within_the_limit_and_release():
    budget = MemoryBudget(1000)
    first, second = budget.reservation(), budget.reservation()
    assert first.grow(600) and budget.held == 600
    assert not second.grow(500)                # would pass the limit: nothing reserved
    assert budget.held == 600 and second.size == 0 and budget.refused == 1
    assert second.grow(400) and budget.held == 1000
    first.release()
    assert budget.held == 400 and first.size == 0
    second.release()
    assert budget.held == 0


def test_release_twice_and_grow_after_release_change_nothing():
    budget = MemoryBudget(1000)
    reservation = budget.reservation()
    reservation.grow(300)
    reservation.release()
    reservation.release()
    assert budget.held == 0
    assert not reservation.grow(10)            # a released reservation holds nothing more
    assert not reservation.ensure(10)
    assert budget.held == 0


def test_ensure_and_shrink():
    budget = MemoryBudget(1000)
    reservation = budget.reservation()
    reservation.grow(100)
    assert reservation.ensure(500) and budget.held == 500
    assert reservation.ensure(200) and budget.held == 500      # already holds more
    assert not reservation.ensure(1001) and budget.held == 500  # unchanged when refused
    reservation.shrink_to(150)
    assert budget.held == 150 and reservation.size == 150
    reservation.shrink_to(400)                                  # never grows
    assert budget.held == 150
    reservation.release()
    assert budget.held == 0


def test_threads_never_pass_the_limit_and_end_at_zero():
    budget = MemoryBudget(10_000)
    seen = []
    errors = []

    def worker(seed):
        rng = random.Random(seed)
        try:
            for _ in range(2000):
                reservation = budget.reservation()
                for _ in range(rng.randint(1, 4)):
                    reservation.grow(rng.randint(1, 3000))
                    seen.append(budget.held)
                if rng.random() < 0.5:
                    reservation.ensure(rng.randint(1, 6000))
                reservation.shrink_to(rng.randint(0, 2000))
                reservation.release()
                if rng.random() < 0.2:
                    reservation.release()                      # a second release: no effect
        except Exception as err:   # reported below, in the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert budget.held == 0
    assert seen and max(seen) <= budget.limit and min(seen) >= 0
    assert budget.refused > 0                       # the limit was reached, and held


# --- the builder ----------------------------------------------------------------------


def test_builder_reserves_as_it_goes_and_builds_once():
    budget = MemoryBudget(1 << 20)
    builder = MessageBuilder(1 << 20, budget.reservation())
    builder.add_header("Subject", b" hello")
    builder.add_body(b"x" * 1000)
    assert budget.held >= 1000
    message = builder.build(JUDGING_COPIES)
    assert message.raw == b"Subject: hello\r\n\r\n" + b"x" * 1000
    assert budget.held == JUDGING_COPIES * len(message.raw)
    assert builder.body_chunks == [] and builder.raw_headers == []   # the parts are dropped
    builder.release()
    assert budget.held == 0


def test_builder_over_budget_keeps_nothing_and_gives_back():
    budget = MemoryBudget(5000)
    builder = MessageBuilder(1 << 20, budget.reservation())
    builder.add_header("Subject", b" hello")
    builder.add_body(b"x" * 4000)
    builder.add_body(b"x" * 4000)               # does not fit
    assert builder.over_budget and builder.body_chunks == [] and budget.held == 0
    builder.add_body(b"x" * 10)                 # nothing more is kept
    assert budget.held == 0
    message = builder.build(JUDGING_COPIES)
    assert message.over_budget and message.raw == b""


def test_builder_over_budget_at_build():
    budget = MemoryBudget(10_000)
    builder = MessageBuilder(1 << 20, budget.reservation())
    builder.add_body(b"x" * 3000)               # fits; 5 copies of it do not
    message = builder.build(JUDGING_COPIES)
    assert message.over_budget and budget.held == 0


def test_builder_for_the_queue_keeps_one_copy():
    budget = MemoryBudget(1 << 20)
    builder = MessageBuilder(1 << 20, budget.reservation())
    builder.add_body(b"x" * 1000)
    message = builder.build(2, keep=1)
    assert budget.held == len(message.raw)
    reservation = builder.detach()
    builder.release()                           # detached: the builder gives nothing back
    assert budget.held == len(message.raw)
    reservation.release()
    assert budget.held == 0


# --- the milter: every path gives the bytes back ----------------------------------------


def start(evaluator, client_ip, size, mail_from="alice@example.com"):
    """A connection with one message up to its body; (ctx, milter)."""
    Milter.factory = lambda: Mx6Milter(evaluator)
    ctx = RecordingCtx()
    ctx._setsymval("i", "4ABCDEF")
    assert ctx._connect(host="client.example.net", helo="mail.example.com",
                        ip=client_ip) == Milter.CONTINUE
    assert ctx._envfrom(f"<{mail_from}>") == Milter.CONTINUE
    assert ctx._envrcpt("<user@example.org>") == Milter.CONTINUE
    headers, body = split_message(to_crlf(message(size)))
    for name, value in headers:
        ctx._priv.header_bytes(name, value)
    assert ctx._eoh() == Milter.CONTINUE
    for offset in range(0, len(body), 65536):
        assert ctx._priv.body(body[offset:offset + 65536]) == Milter.CONTINUE
    return ctx, ctx._priv


@pytest.mark.parametrize("client_ip", ["2001:db8:99::1", "192.0.2.10"])
def test_eom_gives_everything_back(evaluator_factory, client_ip):
    evaluator = evaluator_factory("[greenlist]\nhistory = yes\nfcrdns = no\n")
    ctx, milter = start(evaluator, client_ip, 200_000)
    assert evaluator.memory.held > 200_000      # held while it arrives
    ctx._eom()
    evaluator.greenlist.recorder.flush()
    assert evaluator.memory.held == 0
    assert milter.message.body_chunks == []     # nothing kept after eom


def test_abort_and_close_give_everything_back(evaluator_factory):
    evaluator = evaluator_factory()
    ctx, _ = start(evaluator, "2001:db8:99::1", 200_000)
    ctx._priv.abort()                            # RSET or the MTA giving up
    assert evaluator.memory.held == 0
    ctx, _ = start(evaluator, "2001:db8:99::1", 200_000)
    ctx._close()                                 # the connection lost mid-message
    assert evaluator.memory.held == 0


def test_new_transaction_gives_the_last_one_back(evaluator_factory):
    evaluator = evaluator_factory()
    ctx, _ = start(evaluator, "2001:db8:99::1", 200_000)
    ctx._envfrom("<bob@example.com>")            # MAIL FROM again, without abort
    assert evaluator.memory.held == 0


def test_exception_while_judging_gives_everything_back(evaluator_factory, monkeypatch):
    evaluator = evaluator_factory()

    def broken(*args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(evaluator, "evaluate", broken)
    ctx, _ = start(evaluator, "2001:db8:99::1", 200_000)
    assert ctx._eom() == Milter.TEMPFAIL
    assert ctx._reply[:2] == ("451", "4.3.0")
    assert evaluator.memory.held == 0


def test_ipv6_over_budget_falls_back_ipv4_accepted(evaluator_factory):
    evaluator = evaluator_factory("[milter]\nmax_buffered_bytes = 1M\n")
    raw = message(300_000)                       # 1x fits, 5x does not
    result = run_milter(evaluator, raw, client_ip="2001:db8:99::1")
    assert result.rc == Milter.TEMPFAIL
    assert result.reply == ("451", "4.3.1", "Too busy to check this message over IPv6 now; "
                            "please try again later or over IPv4")
    assert evaluator.memory.held == 0
    result = run_milter(evaluator, raw, client_ip="192.0.2.10")
    assert result.rc == Milter.ACCEPT
    big = message(2_000_000)                     # not even 1x fits
    assert run_milter(evaluator, big, client_ip="2001:db8:99::1").reply[:2] == ("451", "4.3.1")
    assert run_milter(evaluator, big, client_ip="192.0.2.10").rc == Milter.ACCEPT
    assert evaluator.memory.held == 0


def test_over_budget_in_mx6_mode_is_still_temporary(evaluator_factory):
    evaluator = evaluator_factory("[milter]\nmax_buffered_bytes = 1M\n[policy]\nmode = mx6\n")
    result = run_milter(evaluator, message(300_000), client_ip="2001:db8:99::1")
    assert result.rc == Milter.TEMPFAIL and result.reply[:2] == ("451", "4.3.1")


def test_over_budget_in_report_mode_is_accepted_and_marked(evaluator_factory):
    evaluator = evaluator_factory("[milter]\nmax_buffered_bytes = 1M\n[policy]\nmode = report\n")
    result = run_milter(evaluator, message(300_000), client_ip="2001:db8:99::1")
    assert result.rc == Milter.ACCEPT
    verdict = result.header("X-MX6-Verdict")
    assert "failures=memory-budget" in verdict and "reply=451 4.3.1" in verdict
    assert evaluator.memory.held == 0


def test_over_budget_decision_is_logged(evaluator_factory, caplog):
    evaluator = evaluator_factory("[milter]\nmax_buffered_bytes = 1M\n")
    with caplog.at_level("INFO", logger="mx6milter"):
        run_milter(evaluator, message(300_000), client_ip="2001:db8:99::1")
    line = next(r.getMessage() for r in caplog.records if "verdict=" in r.getMessage())
    assert "checks=session=ipv6(2001:db8:99::1),memory=over-budget(max_buffered_bytes=1048576)" \
        in line
    assert "action=tempfail reasons=memory-budget reply=451/4.3.1" in line


def test_ipv4_over_budget_is_not_learnt(evaluator_factory):
    evaluator = evaluator_factory("[milter]\nmax_buffered_bytes = 1M\n"
                                  "[greenlist]\nhistory = yes\nfcrdns = no\n")
    recorder = evaluator.greenlist.recorder
    result = run_milter(evaluator, message(300_000), client_ip="192.0.2.10")
    assert result.rc == Milter.ACCEPT
    recorder.flush()
    assert recorder.dropped == 1 and recorder.recorded == 0   # no room to verify: skipped
    assert evaluator.memory.held == 0


# --- DKIM relaxed body canonicalisation, sliced ----------------------------------------

def test_sliced_relaxed_body_is_dkimpys(monkeypatch):
    from dkim import canonicalization

    from mx6milter.evidence import dkimcanon

    def dkimpy(body):
        return canonicalization.correct_empty_body(canonicalization.strip_trailing_lines(
            canonicalization.compress_whitespace(
                canonicalization.strip_trailing_whitespace(body))))

    monkeypatch.setattr(dkimcanon, "SLICE", 7)        # many slices, cut everywhere
    rng = random.Random(6376)
    alphabet = [b" ", b"\t", b"\r\n", b"\r", b"\n", b"a", b"b", b"  \r\n", b"\r\n\r\n"]
    bodies = [b"", b"\r\n", b"\r\n\r\n", b" \r\n", b"a", b"a \t b \r\n\r\n\r\n", b"\t\r\n  "]
    bodies += [b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
               for _ in range(2000)]
    for body in bodies:
        assert dkimcanon.relaxed_body(body) == dkimpy(body), body
    assert canonicalization.Relaxed.canonicalize_body is dkimcanon.relaxed_body   # installed


def test_sliced_relaxed_body_peak_is_small():
    import tracemalloc

    from mx6milter.evidence import dkimcanon
    body = b"a b c d e f g h i j k l m n o p q r s t u v w x y z\r\n" * 40_000   # 2.1 MB
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    dkimcanon.relaxed_body(body)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert peak < 4 * len(body)      # dkimpy's own: about 34 times for such a body
