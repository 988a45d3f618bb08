"""Sharing an MX with OpenDKIM, OpenDMARC and rspamd: real ones, before and after mx6milter
on one private Postfix, all at the same authserv-id (the MX's name).

What Postfix shows a milter (checked here with the real programs): the headers
as received plus those added by the milters before it, at the top; never its
own Received header. So no position tells a header added by OpenDKIM from one a
sender put at the top of its message. OpenDKIM and OpenDMARC with
``AuthservIDWithJobID`` write ``mx.example.org/QUEUEID``; the queue id is
unknown to the sender, so mx6milter keeps exactly those and removes every
other header claiming its authserv-id (README, "Sharing an MX").

Debian's OpenDKIM resolves through libunbound, which will not query loopback:
it gets the test key with TestPublicKeys. OpenDMARC resolves through the C
library: it runs in a mount namespace whose resolv.conf names the test BIND.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench import procs
from e2e import live_redis  # noqa: F401  (fixture)
from e2e import smtp_send
from dkimkeys import message
from milterd import MilterDaemon, mx6ctl
from postfix import PrivatePostfix
from rspamd import Rspamd

CLIENT = "2001:db8:6::c0e"       # inside example.net's SPF; whitelisted below
AUTHSERV = "mx.example.org"
LISTENERS = ("127.0.0.1:{port} inet  n       -       n       -       -       smtpd\n"
             "[::1]:{port}     inet  n       -       n       -       -       smtpd\n")
FORGED = ("Authentication-Results: mx.example.org; dkim=pass header.d=bank.example",
          "Authentication-Results: mx.example.org/4FORGED1; spf=pass smtp.mailfrom=a@bank.example",
          "Authentication-Results: other.example; spf=pass smtp.mailfrom=sender@example.net")


class Dns(procs.BenchDns):
    PORT53_ADDRESS = "127.0.0.157"      # not the benchmark's, which may run meanwhile


@pytest.fixture(scope="module")
def addresses():
    """The client's IPv6 address, and OpenDMARC's DNS address: named listens only on
    addresses of an interface, and lo has 127.0.0.1 alone."""
    present = subprocess.run(["ip", "addr", "show", "dev", "lo"], capture_output=True,
                             text=True, check=True).stdout
    wanted = [f"{CLIENT}/128", f"{Dns.PORT53_ADDRESS}/32"]
    added = [a for a in wanted if f" {a.split('/')[0]}/" not in present]
    for address in added:
        subprocess.run(["ip", "addr", "add", address, "dev", "lo"], check=True)
    yield
    for address in added:
        subprocess.run(["ip", "addr", "del", address, "dev", "lo"], check=False)


@pytest.fixture(scope="module")
def milters(addresses, live_redis, dkim_keys):  # noqa: F811 (the fixture)
    """OpenDKIM and OpenDMARC (with and without job ids), mx6milter; one directory."""
    out = Path(tempfile.mkdtemp(prefix="mx6-coexist-"))
    out.chmod(0o755)
    dns = Dns(values=dkim_keys.zone_values()).start()
    started = []
    try:
        (out / "testkeys").write_text(
            f"rsa._domainkey.example.net v=DKIM1; k=rsa; p={dkim_keys.rsa_public}\n")
        for job_ids in (True, False):
            directory = out / ("jobid" if job_ids else "plain")
            directory.mkdir()
            directory.chmod(0o755)
            dkim = procs.opendkim(directory, out / "testkeys")
            dmarc = procs.opendmarc(directory, Dns.PORT53_ADDRESS)
            if job_ids:
                for name in ("opendkim.conf", "opendmarc.conf"):
                    with open(directory / name, "a") as conf:
                        conf.write("AuthservIDWithJobID true\n")
            started += [dkim.start(), dmarc.start()]
        mx6 = MilterDaemon(out / "mx6", f"unix:{out}/mx6.sock", live_redis.url,
                           extra=f"[milter]\nsocket_mode = 0666\n[policy]\nauthserv_id = {AUTHSERV}\n",
                           nameservers=dns.nameservers).start()
        started.append(mx6)
        mx6ctl(mx6.conf, "ip", "add", "2001:db8:6::/48")
        yield out
    finally:
        for process in reversed(started):
            process.stop()
        dns.close()
        shutil.rmtree(out, ignore_errors=True)


def deliver(out: Path, order: str, dkim_keys, rspamd_port: int = 0) -> list:
    """Send one signed message with forged headers through Postfix with ORDER, a list
    such as "jobid/opendkim mx6 jobid/opendmarc" ("rspamd": its milter proxy on
    RSPAMD_PORT); the header fields that arrived."""
    where = {"mx6": f"unix:{out}/mx6.sock", "rspamd": f"inet:127.0.0.1:{rspamd_port}"}
    sockets = [where.get(name, f"unix:{out}/{name}.sock") for name in order.split()]
    postfix = PrivatePostfix(main_cf=f"smtpd_milters = {', '.join(sockets)}\n"
                                     "milter_default_action = tempfail\n", listeners=LISTENERS)
    try:
        postfix.start()
        raw = dkim_keys.sign(message(from_="Sender <sender@example.net>"), "example.net")
        raw = "\r\n".join(FORGED).encode() + b"\r\n" + raw
        reply = smtp_send(postfix.port, CLIENT, "sender@example.net", ["user@example.org"], raw)
        assert reply.code == 250, (reply, postfix.log()[-2000:])
        postfix.wait_until_idle()
        [arrived] = postfix.sink.messages()
        queue_id = re.search(r"queued as (\w+)", " ".join(reply.lines)).group(1)
        return [field.replace(queue_id, "QUEUEID") for field in arrived.header_lines()]
    finally:
        postfix.close()


def results(fields: list) -> list:
    return [" ".join(f.split()) for f in fields if f.startswith("Authentication-Results:")]


MX6 = (f"Authentication-Results: {AUTHSERV}; spf=pass smtp.mailfrom=sender@example.net; "
       "dkim=pass header.d=example.net header.a=rsa-sha256 header.s=rsa; "
       "dmarc=pass header.from=example.net policy.dmarc=reject")
OPENDMARC_SPF = f"Authentication-Results: {AUTHSERV}; spf=pass smtp.mailfrom=example.net"


@pytest.mark.parametrize("order", ["jobid/opendkim mx6 jobid/opendmarc",
                                   "jobid/opendkim jobid/opendmarc mx6"])
def test_each_milters_results_arrive_and_no_forged_one(milters, dkim_keys, order):
    fields = deliver(milters, order, dkim_keys)
    found = results(fields)
    assert found.count(MX6) == 1, found
    by_job = [r for r in found if r.startswith(f"Authentication-Results: {AUTHSERV}/QUEUEID;")]
    assert len(by_job) == 2, found
    assert any(" dkim=pass (2048-bit key) header.d=example.net" in r for r in by_job)   # OpenDKIM
    assert any(" dmarc=pass (p=reject dis=none) header.from=example.net" in r for r in by_job)
    assert not any("bank.example" in r or "4FORGED1" in r for r in found), found
    assert "Authentication-Results: other.example; spf=pass smtp.mailfrom=sender@example.net" in found
    # OpenDMARC writes its own SPF result without the job id: after mx6milter it arrives,
    # before mx6milter it cannot be told from a forged header and goes (README).
    assert (OPENDMARC_SPF in found) == order.endswith("opendmarc")
    assert len(found) == 5 - order.endswith("mx6")
    assert any(f.startswith("X-MX6-Verdict: whitelisted;") for f in fields)


def test_without_job_ids_opendkims_results_cannot_be_told_from_forged_ones(milters, dkim_keys):
    # The documented limit: at the same authserv-id and without AuthservIDWithJobID,
    # OpenDKIM's header looks exactly like a forged one to a milter after it, and goes.
    found = results(deliver(milters, "plain/opendkim mx6", dkim_keys))
    assert [r for r in found if r.startswith(f"Authentication-Results: {AUTHSERV}")] == [MX6]


# --- rspamd's milter proxy beside mx6milter ---------------------------------------------------
#
# rspamd writes its Authentication-Results without a job id, at the MTA's name (Postfix's
# myhostname, mx.example.org here: mx6milter's authserv-id too), and by default its
# milter_headers routine REMOVES every Authentication-Results already in the message
# ("remove = 0": all of them), mx6milter's included. So: rspamd before mx6milter loses
# its header (it looks forged); after mx6milter, with "remove = false" for that routine,
# both arrive; after it with rspamd's default, only rspamd's does (README).

KEEP_OTHERS = 'use = ["authentication-results"];\nroutines { authentication-results { remove = false; } }\n'


@pytest.fixture(scope="module", params=["default", "remove=false"])
def rspamd_proxy(request):
    server = Rspamd(**({} if request.param == "default" else {"milter_headers": KEEP_OTHERS}))
    try:
        yield request.param, server.start()
    finally:
        server.close()


def rspamd_results(found: list) -> list:
    # rspamd's own line: its DNS is cut off, so no pass of mx6milter's
    return [r for r in found if r.startswith(f"Authentication-Results: {AUTHSERV};") and r != MX6]


@pytest.mark.parametrize("order", ["mx6 rspamd", "rspamd mx6"])
def test_rspamd_beside_mx6milter(milters, dkim_keys, rspamd_proxy, order):
    config, rspamd = rspamd_proxy
    fields = deliver(milters, order, dkim_keys, rspamd_port=rspamd.proxy_port)
    found = results(fields)
    assert any(f.startswith("X-MX6-Verdict: whitelisted;") for f in fields)
    assert not any("bank.example" in r or "4FORGED1" in r for r in found), found
    if order == "rspamd mx6":               # rspamd's at our name, no job id: taken for forged
        assert found.count(MX6) == 1 and rspamd_results(found) == [], found
    elif config == "remove=false":          # after mx6milter, keeping the others: both
        assert found.count(MX6) == 1 and len(rspamd_results(found)) == 1, found
    else:                                   # rspamd's default removes every one but its own
        assert MX6 not in found and len(rspamd_results(found)) == 1 and len(found) == 1, found
