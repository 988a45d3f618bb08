"""mx6milter(8) against the code: the verdict header's grammar matches every header
policy.decide writes (hypothesis), its examples and the sample log line are what the
code produces for the same input, and FILES names the sockets the configs use."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from hypothesis import given, strategies as st

from mx6milter.config import MilterSection, PolicySection, parse_config
from mx6milter.evaluate import Outcome
from mx6milter.logs import format_decision_log
from mx6milter.model import Evidence, Finding, Session, SessionClass, Tier
from mx6milter.policy import decide

ROOT = Path(__file__).resolve().parents[2]
MAN8 = (ROOT / "man" / "mx6milter.8").read_text()
POLICY = PolicySection(authserv_id="mx.example.org")

# The ABNF of mx6milter(8) "The verdict header", as a regular expression.
KIND = r"[A-Za-z0-9_-]+"
FINDING = rf"{KIND}=[^;,()]+(?:\([^()]*\))?"
VERDICT = re.compile(
    r"(?P<tier>whitelisted|greenlisted|none)"
    r"(?P<subject>; subject-to-content-filtering)?"
    rf"(?:; evidence={FINDING}(?:,{FINDING})*)?"
    r"(?:; failures=[a-z0-9-]+(?:,[a-z0-9-]+)*)?"
    r"(?P<reported>; action=fallback-reported; reply=\d{3} \d\.\d{1,3}\.\d{1,3})?"
    r"; mode=(?:defensive|mx6|report); by=[A-Za-z0-9.-]+")


def plain(roff: str) -> str:
    return roff.replace("\\-", "-").replace("\\(aq", "'").replace("\\e", "\\")


def section(name: str) -> str:
    m = re.search(rf"^\.S[HS] {re.escape(name)}\n(.*?)(?=^\.S[HS] )", MAN8, re.MULTILINE | re.DOTALL)
    assert m, f"mx6milter.8 has no section {name}"
    return m.group(1)


def blocks(text: str) -> list:
    """The no-fill (.nf ... .fi) blocks of TEXT, as lists of plain lines."""
    return [[plain(line) for line in b.splitlines() if not line.startswith(".")]
            for b in re.findall(r"^\.nf\n(.*?)^\.fi$", text, re.MULTILINE | re.DOTALL)]


def finding(kind: str, detail: str = "") -> Finding:
    return Finding(kind, "pass", detail)


EXAMPLES = [
    (POLICY, Evidence(SessionClass.IPV6, whitelist=(finding("ip", "2001:db8:6::/48 source=local"),),
                      greenlist=(finding("fcrdns", "mail.example.net"),))),
    (POLICY, Evidence(SessionClass.IPV6, greenlist=(finding("fcrdns", "mail.example.net"),
                                                    finding("network", "2001:db8:7::/48 source=local")))),
    (PolicySection(authserv_id="mx.example.org", mode="report"),
     Evidence(SessionClass.IPV6, failures=("dns-unavailable",))),
]


def test_the_verdict_header_examples_are_what_the_policy_writes():
    shown = blocks(section("The verdict header"))[1]
    assert shown == [decide(policy, evidence).header for policy, evidence in EXAMPLES]
    for header in shown:
        assert VERDICT.fullmatch(header), header


details = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, exclude_characters="()"),
                  max_size=30)
findings = st.builds(Finding, st.sampled_from(["ip", "domain", "addressbook", "fcrdns", "network",
                                               "asn", "mishandle4xx", "history"]),
                     st.just("pass"), details)


@given(st.lists(findings, max_size=3), st.lists(findings, max_size=3),
       st.lists(st.sampled_from(["dns-unavailable", "redis-unavailable", "budget-spent"]),
                max_size=2, unique=True),
       st.sampled_from(["defensive", "mx6", "report"]))
def test_every_header_the_policy_writes_follows_the_grammar(white, green, failures, mode):
    policy = PolicySection(authserv_id="mx.example.org", mode=mode)
    evidence = Evidence(SessionClass.IPV6, whitelist=tuple(white), greenlist=tuple(green),
                        failures=tuple(failures))
    decision = decide(policy, evidence)
    if decision.header is None:           # a fallback outside report mode adds no header
        assert decision.tier is Tier.NONE and mode != "report"
        return
    m = VERDICT.fullmatch(decision.header)
    assert m, decision.header
    assert m["tier"] == decision.tier.value
    assert bool(m["subject"]) == (decision.tier is Tier.GREENLISTED)
    assert bool(m["reported"]) == (decision.tier is Tier.NONE)


def test_the_sample_log_line_is_what_the_milter_logs():
    checks = (Finding("session", "ipv6", "2001:db8:25::7"), Finding("spf", "pass", "bounce@news.example"),
              Finding("dkim", "pass", "news.example"), Finding("dmarc", "pass", "news.example"),
              Finding("ip", "miss"), Finding("domain", "miss"),
              Finding("addressbook", "miss", "0/1 recipients know the sender"),
              Finding("fcrdns", "pass", "mail.news.example"),
              Finding("greenlist", "insufficient", "1/2 signals"))
    evidence = Evidence(SessionClass.IPV6, checks=checks, authenticated=True)   # SPF, DKIM passed
    session = Session(client_ip="2001:db8:25::7", helo="mail.news.example",
                      mail_from="bounce@news.example", recipients=["alice@example.org"],
                      queue_id="4XyZ1k2Lq3z")
    line = format_decision_log(session, Outcome(evidence, decide(POLICY, evidence), None, 3.2))
    logging_section = section("LOGGING")
    assert " ".join(blocks(logging_section)[0]) == line
    fields = [item.split("=", 1)[0] for item in shlex.split(line)]   # quoted values kept whole
    for name in fields:                   # each field is explained
        assert re.search(rf"^\.TP\n\.B {name}$", logging_section, re.MULTILINE), name


def test_examples_and_files_name_the_sockets_in_use():
    assert section("EXAMPLES").count("mx6milter \\-c") >= 2
    files = plain(section("FILES"))
    postfix = parse_config((ROOT / "contrib" / "postfix" / "mx6milter.conf").read_text())
    for spec in (MilterSection().socket, postfix.milter.socket):
        path = spec.split(":", 1)[1]
        assert re.search(rf"^\.I {re.escape(path)}$", files, re.MULTILINE), path
