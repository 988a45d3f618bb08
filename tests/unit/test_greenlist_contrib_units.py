"""The SpamAssassin rules in contrib/spamassassin matched against the verdict headers
the milter really writes (policy.decide); rspamd run for real: e2e/test_greenlist_contrib.py."""
import re
from pathlib import Path

from verdicts import verdict

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"


def spamassassin_rules() -> dict:
    text = (CONTRIB / "spamassassin" / "mx6milter.cf").read_text()
    rules = {}
    for name, header, pattern in re.findall(r"^header\s+(\S+)\s+(\S+)\s+=~\s+/(.*)/\s*$", text, re.MULTILINE):
        rules[name] = (header, re.compile(pattern))
    return rules


def test_spamassassin_rules_match_the_verdict_headers():
    rules = spamassassin_rules()
    assert set(rules) == {"MX6_WHITELISTED", "MX6_GREENLISTED"}
    assert {header for header, _ in rules.values()} == {"X-MX6-Verdict"}
    matches = {tier: {name for name, (_, rx) in rules.items() if rx.search(verdict(tier, mode))}
               for tier, mode in (("whitelisted", "report"), ("greenlisted", "mx6"),
                                  ("none", "report"))}
    assert matches == {"whitelisted": {"MX6_WHITELISTED"}, "greenlisted": {"MX6_GREENLISTED"},
                       "none": set()}


def test_spamassassin_whitelisted_shortcircuits_and_greenlisted_is_a_marker():
    text = (CONTRIB / "spamassassin" / "mx6milter.cf").read_text()
    assert re.search(r"^shortcircuit\s+MX6_WHITELISTED\s+ham$", text, re.MULTILINE)
    assert not re.search(r"^shortcircuit\s+MX6_GREENLISTED", text, re.MULTILINE)
    score = float(re.search(r"^score\s+MX6_GREENLISTED\s+(\S+)$", text, re.MULTILINE).group(1))
    assert 0 < score < 0.1          # 0 would switch the rule off in SpamAssassin
