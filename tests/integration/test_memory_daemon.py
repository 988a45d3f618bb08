"""The memory budget in the real daemon, driven over its milter socket as an MTA would
(bench/milterclient.py speaks the milter protocol): a large IPv6 message falls back
with reason memory-budget, an IPv4 message of the same size is accepted, and the
bytes come back: afterwards a message needing all but a few hundred bytes of the
budget is judged as usual."""
import asyncio
import re
import sys
from pathlib import Path

from milterd import MilterDaemon

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.milterclient import Envelope, send_one  # noqa: E402

from mx6milter.membudget import JUDGING_COPIES  # noqa: E402

BUDGET = 2 << 20
LINE = b"The quarterly figures, line after line, to make a message of some size.\r\n"


def message(size: int) -> bytes:
    head = (b"From: Alice <alice@example.com>\r\nTo: user@example.org\r\n"
            b"Subject: figures\r\nMessage-ID: <1@example.com>\r\n\r\n")
    body = LINE * ((size - len(head)) // len(LINE))
    return head + body + b"x" * (size - len(head) - len(body) - 2) + b"\r\n"


def envelope(client_ip: str, raw: bytes, queue_id: str) -> Envelope:
    return Envelope(client_ip, "mail.example.com", "alice@example.com", ("user@example.org",),
                    raw, queue_id=queue_id)


async def send_all(address: str, envelopes: list) -> list:
    return await asyncio.gather(*(send_one(address, env) for env in envelopes))


def reasons(log: str, queue_id: str) -> str:
    match = re.search(rf"queue_id={queue_id} .* reasons=(\S+)", log)
    assert match, f"no decision logged for {queue_id}:\n{log}"
    return match.group(1)


def test_large_ipv6_falls_back_ipv4_accepted_budget_returns(tmp_path, redis_url):
    socket_path = tmp_path / "m.sock"
    extra = f"[milter]\nmax_buffered_bytes = {BUDGET}\n"
    with MilterDaemon(tmp_path, f"unix:{socket_path}", redis_url, extra) as milter:
        address = f"unix:{socket_path}"
        large = message(1 << 20)        # arrives within the budget; judging it would not fit
        envelopes = [envelope("2001:db8:99::1", large, f"BIG6{i}") for i in range(4)]
        envelopes += [envelope("192.0.2.10", large, f"BIG4{i}") for i in range(4)]
        verdicts = asyncio.run(send_all(address, envelopes))
        for verdict in verdicts[:4]:
            assert verdict.action == "reply" and verdict.reply.startswith(b"451 4.3.1 "), verdict
        for verdict in verdicts[4:]:
            assert verdict.action == "accept", verdict
        log = milter.log()
        assert all(reasons(log, f"BIG6{i}") == "memory-budget" for i in range(4))

        # All bytes given back: this one needs the whole budget but a few hundred bytes.
        fits = message(BUDGET // JUDGING_COPIES - 200)
        for i in range(3):
            verdict = asyncio.run(send_one(address, envelope("2001:db8:99::1", fits, f"FIT{i}")))
            assert verdict.action == "reply" and verdict.reply.startswith(b"451-4.4.3 "), verdict
            # judged as usual: DNS is unreachable in this test, so that is its reason (4.4.3)
            assert reasons(milter.log(), f"FIT{i}") == "dns-unavailable"
        # and one byte more than the budget allows is refused
        over = message(BUDGET // JUDGING_COPIES + 1)
        verdict = asyncio.run(send_one(address, envelope("2001:db8:99::1", over, "OVER")))
        assert verdict.reply.startswith(b"451 4.3.1 ")


def test_a_reload_keeps_the_running_milter_section_and_says_so(tmp_path, redis_url):
    """SIGHUP with a new [milter] max_buffered_bytes (restart) and [policy] mode: the mode
    changes, the evaluator keeps judging with the running [milter], and the log says so."""
    socket_path = tmp_path / "m.sock"
    with MilterDaemon(tmp_path, f"unix:{socket_path}", redis_url,
                      f"[milter]\nmax_buffered_bytes = {BUDGET}\n") as milter:
        text = milter.conf.read_text()
        assert f"max_buffered_bytes = {BUDGET}\n" in text and "[policy]\n" in text
        milter.reload(text.replace(f"max_buffered_bytes = {BUDGET}\n",
                                   f"max_buffered_bytes = {2 * BUDGET}\n")
                      .replace("[policy]\n", "[policy]\nmode = report\n"))
        milter.wait_log("configuration reloaded")
        assert "reload: [milter] changes take effect only after a restart" in milter.log()
        large = message(1 << 20)        # judging it needs 5 MiB: more than either budget
        verdict = asyncio.run(send_one(f"unix:{socket_path}",
                                       envelope("2001:db8:99::1", large, "RELOADED")))
        assert verdict.action == "accept", verdict            # report mode: reloaded
        line = next(line for line in milter.log().splitlines() if "queue_id=RELOADED" in line)
        assert f"memory=over-budget(max_buffered_bytes={BUDGET})" in line, line
