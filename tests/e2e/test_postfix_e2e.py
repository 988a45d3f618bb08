"""End to end: a real Postfix (private instance) with the real mx6milter daemon.

Mail goes in over SMTP from real IPv6 and IPv4 source addresses; Postfix
relays what it accepts to smtp-sink, which writes one file per transaction.
Every message sent is recorded in a Ledger with the reply it got; each test
ends by checking that every accepted message arrived exactly once, for
exactly its recipients, and nothing refused arrived at all.

Postfix is configured with contrib/postfix/main.cf verbatim (and, for the
dedicated-listener layout, contrib/postfix/master.cf with its example
addresses replaced); the milter with the [milter] keys of
contrib/postfix/mx6milter.conf (socket path moved into the private queue
directory, user nobody instead of mx6milter).
"""
from __future__ import annotations

import configparser
import grp
import pwd
import signal
import smtplib
import stat
from pathlib import Path

import pytest

from e2e import (AUTHSERV, FIRST_451, MILTER_DOWN, UNKNOWN, WHITELISTED, Ledger,
                 fields_except_received, make_message, sent_fields)
from e2e import live_redis, sources  # noqa: F401  (fixtures)
from milterd import MilterDaemon, listener_nodelay, merge_ini, mx6ctl, proc_ids
from postfix import CONTRIB, PrivatePostfix, contrib_master_cf, free_dual_port
from servers import free_port


def contrib_milter_keys(queue_dir: Path, socket_name: str = "mx6milter.sock") -> str:
    """contrib/postfix/mx6milter.conf's [milter] keys, moved into a private queue dir."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string((CONTRIB / "mx6milter.conf").read_text())
    keys = dict(parser.items("milter", raw=True))
    assert keys["socket"] == "unix:/var/spool/postfix/mx6milter/mx6milter.sock"
    keys["socket"] = f"unix:{queue_dir}/mx6milter/{socket_name}"
    assert keys["user"] == "mx6milter"
    keys["user"] = "nobody"               # the tests cannot create users
    return "[milter]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


class Mta:
    """Postfix plus its milter(s), with one ledger for everything sent."""

    def __init__(self, postfix: PrivatePostfix, milters: dict, transport: str):
        self.postfix = postfix
        self.milters = milters
        self.milter = milters["main"]
        self.transport = transport
        self.ledger = Ledger()

    def close(self):
        for milter in self.milters.values():
            milter.stop()
        self.postfix.close()
        assert self.postfix.master_pid() is None


def start_mta(tmp: Path, live_redis, dns_server, main_cf: str, milter_specs: dict,
              listeners: str | None = None, transport: str = "unix") -> Mta:
    kwargs = {"listeners": listeners} if listeners else {}
    postfix = PrivatePostfix(main_cf=main_cf, **kwargs)
    milters = {}
    try:
        postfix.start()
        for name, extra in milter_specs.items():
            extra = extra(postfix) if callable(extra) else extra
            ini = configparser.ConfigParser(interpolation=None)
            ini.read_string(extra)
            milters[name] = MilterDaemon(tmp / name, ini.get("milter", "socket"), live_redis.url,
                                         extra=extra, nameservers=dns_server.nameservers).start()
        mx6ctl(milters["main"].conf, "ip", "add", "2001:db8:6::/48")
    except BaseException:
        for milter in milters.values():
            milter.stop()
        postfix.close()
        raise
    return Mta(postfix, milters, transport)


MILTER_EXTRA = "[milter]\nmax_message_size = 2M\n[policy]\nauthserv_id = mx.example.org\n"


@pytest.fixture(scope="module")
def unix_mta(sources, live_redis, dns_server, tmp_path_factory):
    """Layout 1 as contrib/postfix/main.cf has it: one listener, milter on a unix socket."""
    mta = start_mta(tmp_path_factory.mktemp("unix"), live_redis, dns_server,
                    (CONTRIB / "main.cf").read_text(),
                    {"main": lambda pf: merge_ini(contrib_milter_keys(pf.queue_dir), MILTER_EXTRA)})
    yield mta
    mta.close()


@pytest.fixture(scope="module")
def tcp_mta(sources, live_redis, dns_server, tmp_path_factory):
    """Layout 1 with the milter over TCP (main.cf's smtpd_milters overridden)."""
    port = free_port()
    main_cf = (CONTRIB / "main.cf").read_text() + f"\nsmtpd_milters = inet:127.0.0.1:{port}\n"
    mta = start_mta(tmp_path_factory.mktemp("tcp"), live_redis, dns_server, main_cf,
                    {"main": merge_ini(f"[milter]\nsocket = inet:{port}@127.0.0.1\n", MILTER_EXTRA)},
                    transport="tcp")
    mta.milter_port = port
    yield mta
    mta.close()


@pytest.fixture(params=["unix", "tcp"])
def mta(request):
    return request.getfixturevalue(f"{request.param}_mta")


# --- layout 1: one listener; IPv6 judged, IPv4 passed

def test_ipv6_whitelisted_arrives_with_verdict_and_auth_results(mta):
    msg_id, _, reply = mta.ledger.message(mta.postfix.port, WHITELISTED)
    assert (reply.code, reply.stage) == (250, "data"), reply
    message = mta.ledger.check(mta.postfix)[msg_id]
    verdicts = [f for f in message.header_lines() if f.startswith("X-MX6-Verdict:")]
    assert verdicts == [f"X-MX6-Verdict: whitelisted; evidence=ip=pass(2001:db8:6::/48 "
                        f"source=local); mode=defensive; by={AUTHSERV}"]
    results = [f for f in message.header_lines() if f.startswith("Authentication-Results:")]
    assert len(results) == 1
    assert results[0].startswith(f"Authentication-Results: {AUTHSERV};")
    assert "spf=pass smtp.mailfrom=sender@example.net" in results[0]
    # Both above Postfix's own Received header: added at the top, as MTAs expect.
    fields = message.header_lines()
    received = [i for i, f in enumerate(fields) if f.startswith("Received: from mail.example.net")]
    assert fields.index(verdicts[0]) < received[0] and fields.index(results[0]) < received[0]


def test_ipv6_unknown_gets_the_exact_451_and_nothing_arrives(mta):
    _msg_id, _, reply = mta.ledger.message(mta.postfix.port, UNKNOWN)
    assert (reply.code, reply.stage) == (451, "data")
    assert len(reply.lines) == 2
    assert reply.lines[0] == FIRST_451
    assert reply.lines[1].startswith(f"4.7.26 Authentication-Results: {AUTHSERV}; spf=fail "
                                     "smtp.mailfrom=sender@example.net;")
    assert "dmarc=fail" in reply.lines[1]
    mta.ledger.check(mta.postfix)


def test_ipv4_arrives_untouched(mta):
    msg_id, raw, reply = mta.ledger.message(
        mta.postfix.port, "127.0.0.1",
        headers=["Authentication-Results: other.example; spf=pass smtp.mailfrom=example.net"],
        body=b"Line one.\r\n\r\nLine three, after an empty line.\r\n")
    assert reply.code == 250
    message = mta.ledger.check(mta.postfix)[msg_id]
    assert fields_except_received(message) == sent_fields(raw)
    assert message.body.rstrip(b"\n") == b"Line one.\n\nLine three, after an empty line."


def test_our_forged_headers_are_removed_over_ipv4_and_ipv6(mta):
    forged = [f"Authentication-Results: {AUTHSERV}; dkim=pass header.d=example.net",
              "X-MX6-Verdict: whitelisted; evidence=forged",
              "Authentication-Results: other.example; dkim=pass header.d=example.net",
              f"Authentication-Results: {AUTHSERV.upper()}; spf=pass"]
    id4, raw4, reply4 = mta.ledger.message(mta.postfix.port, "127.0.0.1", headers=forged)
    id6, _raw6, reply6 = mta.ledger.message(mta.postfix.port, WHITELISTED, headers=forged)
    assert reply4.code == reply6.code == 250
    arrived = mta.ledger.check(mta.postfix)
    kept = [f for f in sent_fields(raw4) if f not in (forged[0], forged[1], forged[3])]
    assert fields_except_received(arrived[id4]) == kept
    fields6 = fields_except_received(arrived[id6])
    assert forged[0] not in fields6 and forged[1] not in fields6 and forged[3] not in fields6
    assert forged[2] in fields6
    ours = [f for f in fields6 if f.startswith(f"Authentication-Results: {AUTHSERV};")]
    assert len(ours) == 1 and "dkim=pass" not in ours[0]
    assert len([f for f in fields6 if f.startswith("X-MX6-Verdict:")]) == 1


def test_fifty_recipients_one_message(mta):
    rcpts = [f"user{n:02d}@example.org" for n in range(50)]
    msg_id, _, reply = mta.ledger.message(mta.postfix.port, WHITELISTED, rcpts=rcpts)
    assert reply.code == 250
    arrived = mta.ledger.check(mta.postfix)   # exactly these 50, each once
    assert sorted(arrived[msg_id].rcpts) == rcpts
    _rejected_id, _, rejected = mta.ledger.message(mta.postfix.port, UNKNOWN, rcpts=rcpts)
    assert rejected.code == 451              # all or none: none of the 50
    mta.ledger.check(mta.postfix)


def test_ten_megabyte_message(mta):
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ=-+.\r\n"   # 68 bytes
    body = line * (10 * 1024 * 1024 // len(line) + 1)
    msg_id, _, reply = mta.ledger.message(mta.postfix.port, WHITELISTED, body=body)
    assert reply.code == 250, reply      # above [milter] max_message_size = 2M: judged anyway
    message = mta.ledger.check(mta.postfix)[msg_id]
    assert message.body.rstrip(b"\n") == body.replace(b"\r\n", b"\n").rstrip(b"\n")
    assert any(f.startswith("X-MX6-Verdict: whitelisted;") for f in message.header_lines())
    _, _, refused = mta.ledger.message(mta.postfix.port, UNKNOWN, body=body)
    assert refused.code == 451 and refused.lines[0] == FIRST_451
    mta.ledger.check(mta.postfix)


def test_milter_runs_unprivileged_with_the_socket_given_to_postfix(unix_mta):
    milter = unix_mta.milter
    nobody = pwd.getpwnam("nobody")
    ids = proc_ids(milter.pid)
    assert ids["Uid"] == [nobody.pw_uid] * 4 and ids["Gid"] == [nobody.pw_gid] * 4
    info = milter.unix_path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert (info.st_uid, info.st_gid) == (nobody.pw_uid, grp.getgrnam("postfix").gr_gid)
    assert stat.S_IMODE(info.st_mode) == 0o660
    directory = milter.unix_path.parent.stat()
    assert (directory.st_gid, stat.S_IMODE(directory.st_mode)) == (grp.getgrnam("postfix").gr_gid, 0o750)


def test_tcp_milter_listener_has_nodelay(tcp_mta):
    assert listener_nodelay(tcp_mta.milter.pid, tcp_mta.milter_port) is True


def test_milter_stopped_postfix_tempfails_and_loses_nothing(unix_mta):
    """contrib's milter_default_action = tempfail: no milter, no mail in, none lost."""
    mta = unix_mta
    sources = (WHITELISTED, UNKNOWN, "127.0.0.1")
    assert mta.milter.terminate() == 0
    try:
        sent = [mta.ledger.message(mta.postfix.port, source) for source in sources]
        for _, _, reply in sent:
            assert (reply.code, reply.lines) == (451, [MILTER_DOWN]), reply
        assert mta.postfix.queue_ids() == []
        mta.ledger.check(mta.postfix)
    finally:
        mta.milter.start()
    # The senders kept their messages and retry: each now gets its real verdict, once.
    codes = []
    for (msg_id, raw, _), source in zip(sent, sources):
        del mta.ledger.refused[msg_id]
        codes.append(mta.ledger.send(mta.postfix.port, source, raw, msg_id=msg_id).code)
    assert codes == [250, 451, 250]
    mta.ledger.check(mta.postfix)


def test_sigterm_lets_the_session_in_flight_finish(unix_mta):
    """SIGTERM between RCPT and DATA: that message is still judged; new sessions get 4xx."""
    mta = unix_mta
    msg_id = mta.ledger.new_id()
    raw = make_message(msg_id)
    smtp = smtplib.SMTP("::1", mta.postfix.port, local_hostname="mail.example.net",
                        timeout=60, source_address=(WHITELISTED, 0))
    try:
        smtp.ehlo()
        assert smtp.mail("sender@example.net")[0] == 250
        assert smtp.rcpt("user@example.org")[0] == 250
        mta.milter.process.send_signal(signal.SIGTERM)
        mta.milter.wait_log("stopping on signal: no new sessions; 1 in flight")
        _late_id, _, late = mta.ledger.message(mta.postfix.port, "127.0.0.1")
        assert (late.code, late.lines) == (451, [MILTER_DOWN]), late   # kept by the sender
        code, _ = smtp.data(raw)
        assert code == 250
        mta.ledger.accepted[msg_id] = ["user@example.org"]
    finally:
        smtp.close()
    assert mta.milter.process.wait(timeout=30) == 0
    mta.milter.start()
    arrived = mta.ledger.check(mta.postfix)
    assert any(f.startswith("X-MX6-Verdict: whitelisted;") for f in arrived[msg_id].header_lines())


# --- layout 2: contrib/postfix/master.cf, dedicated listeners

@pytest.fixture(scope="module")
def dedicated_mta(sources, live_redis, dns_server, tmp_path_factory):
    port4, port6, port_mx6 = free_dual_port(), free_dual_port(), free_dual_port()
    listeners = contrib_master_cf({"192.0.2.25:smtp": f"127.0.0.1:{port4}",
                                   "[2001:db8::25]:smtp": f"[::1]:{port6}",
                                   "[2001:db8::26]:smtp": f"[::1]:{port_mx6}"})
    mx6_extra = ("[policy]\nmode = mx6\nregistration_url = https://mx.example.org/mx6\n")
    mta = start_mta(
        tmp_path_factory.mktemp("dedicated"), live_redis, dns_server,
        (CONTRIB / "main.cf").read_text(),
        {"main": lambda pf: merge_ini(contrib_milter_keys(pf.queue_dir), MILTER_EXTRA),
         "mx6": lambda pf: merge_ini(contrib_milter_keys(pf.queue_dir, "mx6.sock"),
                                     MILTER_EXTRA, mx6_extra)},
        listeners=listeners)
    mta.ports = {"ipv4": port4, "ipv6": port6, "mx6": port_mx6}
    yield mta
    mta.close()


def test_dedicated_mx6_listener_answers_550_with_registration_url(dedicated_mta):
    mta = dedicated_mta
    _, _, reply = mta.ledger.message(mta.ports["mx6"], UNKNOWN)
    assert (reply.code, reply.stage) == (550, "data")
    assert reply.lines[0] == "5.5.7 Fall back to IPv4: not accepted over IPv6 from this sender"
    assert reply.lines[1].startswith(f"5.5.7 Authentication-Results: {AUTHSERV}; spf=fail")
    assert reply.lines[2:] == ["5.5.7 To be accepted over IPv6: https://mx.example.org/mx6"]
    msg_id, _, accepted = mta.ledger.message(mta.ports["mx6"], WHITELISTED)
    assert accepted.code == 250
    arrived = mta.ledger.check(mta.postfix)
    assert any(f.endswith("mode=mx6; by=mx.example.org") for f in arrived[msg_id].header_lines())


def test_dedicated_ipv6_listener_defensive(dedicated_mta):
    mta = dedicated_mta
    _, _, reply = mta.ledger.message(mta.ports["ipv6"], UNKNOWN)
    assert reply.code == 451 and reply.lines[0] == FIRST_451
    _, _, accepted = mta.ledger.message(mta.ports["ipv6"], WHITELISTED)
    assert accepted.code == 250
    mta.ledger.check(mta.postfix)


def test_dedicated_ipv4_listener_works_without_any_milter(dedicated_mta):
    mta = dedicated_mta
    for milter in mta.milters.values():
        assert milter.terminate() == 0
    try:
        msg_id, raw, reply4 = mta.ledger.message(mta.ports["ipv4"], "127.0.0.1")
        _, _, reply6 = mta.ledger.message(mta.ports["ipv6"], WHITELISTED)
        _, _, reply_mx6 = mta.ledger.message(mta.ports["mx6"], WHITELISTED)
    finally:
        for milter in mta.milters.values():
            milter.start()
    assert reply4.code == 250
    assert (reply6.code, reply6.lines) == (451, [MILTER_DOWN])
    assert (reply_mx6.code, reply_mx6.lines) == (451, [MILTER_DOWN])
    arrived = mta.ledger.check(mta.postfix)
    assert fields_except_received(arrived[msg_id]) == sent_fields(raw)
