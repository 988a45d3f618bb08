"""The verdict header value policy.decide writes, for the content-filter tests."""
from mx6milter.config import parse_config
from mx6milter.model import Evidence, Finding, SessionClass
from mx6milter.policy import decide


def verdict(tier_findings: str, mode: str = "defensive") -> str:
    """The verdict header value policy.decide writes for such evidence."""
    policy = parse_config(f"[policy]\nmode = {mode}\nauthserv_id = mx.example.org\n").policy
    finding = Finding("ip", "pass", "2001:db8::/32 source=local")
    if tier_findings == "whitelisted":
        evidence = Evidence(SessionClass.IPV6, whitelist=(finding,))
    elif tier_findings == "greenlisted":
        evidence = Evidence(SessionClass.IPV6, greenlist=(Finding("fcrdns", "pass", "mail.example.net"),
                                                          Finding("asn", "pass", "AS64500 2001:db8::/32")))
    else:
        evidence = Evidence(SessionClass.IPV6)
    return decide(policy, evidence).header
