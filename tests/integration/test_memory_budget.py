"""The memory budget ([milter] max_buffered_bytes) through the milter in-process
(pymilter's TestCtx) with a real Redis and DNS: every path of a message gives its
bytes back; over budget, IPv6 falls back (451 4.3.1) and IPv4 is accepted."""
import Milter
import pytest

from harness import RecordingCtx, run_milter, split_message, to_crlf
from mx6milter.milter import Mx6Milter

LINE = b"The quarterly figures, line after line, to make a message of some size.\r\n"


def message(size: int) -> bytes:
    head = (b"From: Alice <alice@example.com>\r\nTo: user@example.org\r\n"
            b"Subject: figures\r\nMessage-ID: <1@example.com>\r\n\r\n")
    return head + LINE * (size // len(LINE) + 1)


# --- the milter: every path gives the bytes back ----------------------------------------


def start(evaluator, client_ip, size, mail_from="alice@example.com"):
    """A connection with one message up to its body; (ctx, milter)."""
    Milter.factory = lambda: Mx6Milter(evaluator)
    ctx = RecordingCtx()
    ctx._setsymval("i", "4ABCDEF")
    assert ctx._connect(host="client.example.net", helo="mail.example.com",
                        ip=client_ip) == Milter.CONTINUE
    assert ctx._envfrom(f"<{mail_from}>") == Milter.CONTINUE
    # negotiated without a reply (the harness offers every protocol option), as Postfix does
    assert ctx._envrcpt("<user@example.org>") == Milter.NOREPLY
    headers, body = split_message(to_crlf(message(size)))
    for name, value in headers:
        ctx._priv.header_bytes(name, value)
    assert ctx._eoh() == Milter.CONTINUE
    for offset in range(0, len(body), 65536):
        assert ctx._priv.body(body[offset:offset + 65536]) == Milter.NOREPLY
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
    assert 'checks="session=ipv6(2001:db8:99::1),memory=over-budget(max_buffered_bytes=1048576)"' \
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
