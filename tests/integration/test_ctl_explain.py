"""mx6ctl explain gives the milter's own verdict, reply and headers, case by case.

CASES mirrors the milter's test tables (tests/integration/test_milter_foundation.py) plus
the domain and addressbook whitelists; each case runs through the milter
(pymilter's test context, harness.run_milter) and through ``mx6ctl explain
--json`` with the same configuration, Redis and DNS, and both must agree.
Add a row here for every new milter case.
"""
import json
from dataclasses import dataclass, field

import Milter
import pytest

from mx6milter.config import load_config
from mx6milter.service import build_evaluator
from mx6milter.entries import parse_ipv6_prefix
from mx6milter.store import Store
from mx6milter.prefixes import ip_field

from ctl_runner import Ctl
from harness import run_milter

MESSAGE = (b"From: Sender <sender@example.net>\r\nTo: user@example.org\r\n"
           b"Subject: hello\r\nMessage-ID: <1@example.net>\r\n\r\nHello.\r\n")
FORGED = (b"X-MX6-Verdict: whitelisted; forged\r\n"
          b"Authentication-Results: other.example; spf=pass\r\n"
          b"Authentication-Results: localhost; spf=pass smtp.mailfrom=x@y\r\n")
ACTIONS = {Milter.ACCEPT: "accept", Milter.TEMPFAIL: "tempfail", Milter.REJECT: "reject"}


@dataclass
class Case:
    name: str
    action: str                       # what both must answer
    tier: str
    client_ip: str = "2001:db8:99::1"
    helo: str = "mail.example.net"
    mail_from: str = "sender@example.net"
    rcpts: tuple = ("user@example.org",)
    message: bytes = MESSAGE
    config: str = ""
    ips: tuple = ()                   # (source, prefix, expiry value)
    domains: tuple = ()               # (domain, value)
    addressbook: tuple = ()           # (recipient, sender)
    auth_user: str = ""
    redis_down: bool = False
    extra: dict = field(default_factory=dict)


CASES = [
    # tests/integration/test_milter_foundation.py
    Case("ipv4 untouched", "accept", "bypass", client_ip="192.0.2.10"),
    Case("ipv4-mapped ipv6 is ipv4", "accept", "bypass", client_ip="::ffff:10.0.0.2"),
    Case("whitelisted /128", "accept", "whitelisted", client_ip="2001:db8:6::10",
         ips=(("local", "2001:db8:6::10/128", "0"),)),
    Case("whitelisted address", "accept", "whitelisted", client_ip="2001:db8:6::10",
         ips=(("local", "2001:db8:6::10", "0"),)),
    Case("whitelisted /48", "accept", "whitelisted", client_ip="2001:db8:6::10",
         ips=(("local", "2001:db8:6::/48", "0"),)),
    Case("longest prefix wins", "accept", "whitelisted", client_ip="2001:db8:6::10",
         ips=(("feed", "2001:db8::/32", "0"), ("local", "2001:db8:6::/48", "0"))),
    Case("expired entry does not count", "tempfail", "none", client_ip="2001:db8:6::10",
         ips=(("local", "2001:db8:6::/48", "1000"),)),
    Case("unknown ipv6 defensive", "tempfail", "none"),
    Case("unknown ipv6 mx6 mode", "reject", "none",
         config="[policy]\nmode = mx6\nregistration_url = https://example.org/register\n"),
    Case("unknown ipv6 report mode", "accept", "none", config="[policy]\nmode = report\n"),
    Case("forged headers, whitelisted", "accept", "whitelisted", client_ip="2001:db8:6::10",
         message=FORGED + MESSAGE, ips=(("local", "2001:db8:6::/48", "0"),)),
    Case("forged verdict over ipv4", "accept", "bypass", client_ip="192.0.2.10",
         message=b"X-MX6-Verdict: whitelisted\r\n" + MESSAGE),
    Case("authenticated submission", "accept", "bypass", auth_user="alice"),
    Case("trusted network", "accept", "bypass", client_ip="2001:db8:7::5",
         config="[policy]\ntrusted_networks = 2001:db8:7::/48\n"),
    Case("redis down", "tempfail", "none", client_ip="2001:db8:6::10", redis_down=True),
    Case("percent in reply text", "tempfail", "none",
         config="[policy]\ndefensive_text = 100% sure; retry over IPv4 %s\n"),
    # the domain and addressbook whitelists (example.net: SPF for 2001:db8:6::/48, DMARC)
    Case("domain, DMARC-aligned SPF pass", "accept", "whitelisted", client_ip="2001:db8:6::10",
         domains=(("example.net", "dmarc 0"),)),
    Case("domain needs dkim, only spf passed", "tempfail", "none", client_ip="2001:db8:6::10",
         domains=(("example.net", "dkim 0"),)),
    Case("domain, spf fails from elsewhere", "tempfail", "none", client_ip="2001:db8:99::1",
         domains=(("example.net", "any 0"),)),
    Case("addressbook of the only recipient", "accept", "whitelisted", client_ip="2001:db8:6::10",
         addressbook=(("user@example.org", "sender@example.net"),)),
    Case("addressbook of one of two recipients", "tempfail", "none", client_ip="2001:db8:6::10",
         rcpts=("user@example.org", "other@example.org"),
         addressbook=(("user@example.org", "sender@example.net"),)),
    Case("addressbook, LF line ends in the file", "accept", "whitelisted",
         client_ip="2001:db8:6::10", message=MESSAGE.replace(b"\r\n", b"\n"),
         addressbook=(("USER@example.org", "Sender@Example.NET"),)),
    Case("null sender", "tempfail", "none", mail_from=""),
]


def seed(store: Store, case: Case) -> None:
    for source, prefix, value in case.ips:
        store.add("ip", source, [("", ip_field(parse_ipv6_prefix(prefix)), value)])
    for domain, value in case.domains:
        store.add("domain", "local", [("", domain, value)])
    for rcpt, sender in case.addressbook:
        store.add("ab", "local", [(rcpt.lower(), sender.lower(), "0")])


def explain_argv(case: Case, message_path) -> list:
    argv = ["explain", "--client-ip", case.client_ip, "--helo", case.helo,
            "--mail-from", case.mail_from]
    for rcpt in case.rcpts:
        argv += ["--rcpt", rcpt]
    if case.auth_user:
        argv += ["--auth-user", case.auth_user]
    return argv + ["--json", str(message_path)]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_explain_gives_the_milters_verdict(case, tmp_path, redis_url, dns_server):
    url = "redis://127.0.0.1:1/0" if case.redis_down else redis_url
    ctl = Ctl(tmp_path, url, dns_server.nameservers, extra=case.config)
    config = load_config(str(ctl.config))
    if not case.redis_down:
        seed(Store.from_config(config.redis), case)

    macros = {"{auth_authen}": case.auth_user} if case.auth_user else None
    milter = run_milter(build_evaluator(config), case.message, client_ip=case.client_ip,
                        helo=case.helo, mail_from=case.mail_from, rcpts=case.rcpts, macros=macros)
    run = ctl(*explain_argv(case, ctl.file("message.eml", case.message)))
    assert run.rc == (1 if case.redis_down else 0), run.err
    explained = json.loads(run.out)

    assert ACTIONS[milter.rc] == explained["action"] == case.action
    assert explained["tier"] == case.tier
    if milter.reply is None:
        assert explained["reply"] is None
    else:
        reply = explained["reply"]
        assert tuple(milter.reply) == (reply["code"], reply["status"], *reply["lines"])
    verdict_header = config.policy.verdict_header
    assert milter.header(verdict_header) == (explained["header"] or {}).get("value")
    if milter.added:
        assert milter.header("Authentication-Results") == explained["auth_results"]
    if case.redis_down:
        assert "redis-unavailable" in explained["failures"]
        assert "did not answer" in run.err


def test_explain_text_shows_every_step_and_the_exact_reply(tmp_path, redis_url, dns_server):
    ctl = Ctl(tmp_path, redis_url, dns_server.nameservers,
              extra="[policy]\nregistration_url = https://example.org/register\n")
    Store.from_config(load_config(str(ctl.config)).redis).add(
        "ab", "local", [("user@example.org", "sender@example.net", "0")])
    message = ctl.file("m.eml", MESSAGE)
    run = ctl("explain", "--client-ip", "2001:db8:99::1", "--helo", "mail.example.net",
              "--mail-from", "<sender@example.net>", "--rcpt", "<user@example.org>",
              "--rcpt", "other@example.org", message)
    assert run.rc == 0
    text = run.out
    expected = json.loads(ctl("explain", "--client-ip", "2001:db8:99::1", "--helo",
                              "mail.example.net", "--mail-from", "sender@example.net", "--rcpt",
                              "user@example.org", "--rcpt", "other@example.org", "--json",
                              message).out)
    assert "class         ipv6: judged" in text
    for check in expected["checks"]:                       # every finding, in order
        assert f"  {check['kind']:<13} {check['result']:<15} {check['detail']}".rstrip() in text
    assert "spf           fail" in text                   # 2001:db8:99::1 is not in example.net's SPF
    assert "ip            miss" in text
    assert "user@example.org: yes, source local" in text
    assert "other@example.org: no" in text
    assert "tier          none" in text and "action        tempfail" in text
    smtp = expected["reply"]["smtp"].split("\r\n")
    assert smtp[0] == "451-4.7.26 Not accepted over IPv6 from this sender; please retry over IPv4"
    assert smtp[-1] == "451 4.7.26 To be accepted over IPv6: https://example.org/register"
    assert ("  status        4.7.26 (neither SPF nor DKIM passed; "
            "[policy] defensive_status_unauthenticated)") in text
    assert expected["fallback"] == {"reason": "not-authenticated", "status": "4.7.26",
                                    "meaning": "neither SPF nor DKIM passed",
                                    "key": "[policy] defensive_status_unauthenticated"}
    assert "SMTP reply\n" + "\n".join("  " + line for line in smtp) in text


def test_explain_bypassed_session_says_not_judged(tmp_path, redis_url):
    ctl = Ctl(tmp_path, redis_url)
    run = ctl("explain", "--client-ip", "192.0.2.10", "--mail-from", "", "--rcpt",
              "user@example.org", ctl.file("m.eml", MESSAGE))
    assert run.rc == 0
    assert "class         ipv4: not judged, passed untouched" in run.out
    assert "SMTP reply: accepted" in run.out


def test_explain_reads_the_message_from_stdin(tmp_path, redis_url, dns_server):
    ctl = Ctl(tmp_path, redis_url, dns_server.nameservers)
    result = ctl.process("explain", "--client-ip", "2001:db8:99::1", "--mail-from",
                         "sender@example.net", "--rcpt", "user@example.org", "--json", "-",
                         input=MESSAGE)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "tempfail"


@pytest.mark.parametrize("argv, words", [
    (["--client-ip", "not-an-ip", "--mail-from", "a@example.net", "--rcpt", "u@example.org", "MSG"],
     "not an IP address"),
    (["--client-ip", "2001:db8::1", "--mail-from", "a@example.net", "--rcpt", "u@example.org",
      "/nonexistent.eml"], "cannot read the message"),
])
def test_explain_bad_input_is_exit_2(tmp_path, redis_url, argv, words):
    ctl = Ctl(tmp_path, redis_url)
    message = ctl.file("m.eml", MESSAGE)
    run = ctl("explain", *[str(message) if a == "MSG" else a for a in argv])
    assert run.rc == 2 and words in run.err


def test_explain_without_rcpt_is_a_usage_error(tmp_path, redis_url):
    ctl = Ctl(tmp_path, redis_url)
    result = ctl.process("explain", "--client-ip", "2001:db8::1", "--mail-from", "a@example.net",
                         ctl.file("m.eml", MESSAGE))
    assert result.returncode == 2 and b"--rcpt" in result.stderr and b"Traceback" not in result.stderr


def test_explain_names_the_domains_the_evaluator_authenticated(tmp_path, redis_url, dns_server,
                                                             dkim_keys):
    """example.biz publishes no DMARC record; a DKIM pass of example.biz is aligned
    with its From all the same, so the evaluator counts it as "dmarc" (a domain entry
    requiring dmarc accepts it). explain printed [] there: it rebuilt the list its
    own way, from dmarc=pass only."""
    from dkimkeys import message
    signed = dkim_keys.sign(message(from_="Carol <carol@example.biz>"), "example.biz", "rsa")
    ctl = Ctl(tmp_path, redis_url, dns_server.nameservers)
    seed(Store.from_config(load_config(str(ctl.config)).redis),
         Case("", "", "", domains=(("example.biz", "dmarc 0"),)))
    case = Case("", "", "", client_ip="2001:db8:99::1", mail_from="carol@example.biz",
                message=signed)
    explained = json.loads(ctl(*explain_argv(case, ctl.file("m.eml", signed))).out)
    assert explained["authenticated_domains"] == {"dkim": ["example.biz"], "spf": [],
                                                  "dmarc": ["example.biz"], "arc": []}
    assert explained["tier"] == "whitelisted"
