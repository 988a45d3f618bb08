"""Other projects' test data run through mx6milter's own functions.

Sources (data only, copied into tests/data/outside/; see its README for
commits and licences; the loaders and checks here are ours):

- DMARC records: Mail::DMARC (github.com/msimerson/mail-dmarc, t/01.Policy.t,
  t/04.PurePerl.t) and OpenDMARC (github.com/trusteddomainproject/OpenDMARC,
  libopendmarc/tests/test_dmarc_parse.c), gathered in dmarc-records.json,
  through mx6milter.evidence.dmarc_record.parse_record.
- SPF: the RFC 7208 test suite as shipped by pyspf (github.com/sdgathman/pyspf,
  test/rfc7208-tests.yml), through mx6milter.evidence.auth.check_spf, with
  each scenario's DNS data served by a real BIND on loopback.
- Public Suffix List: github.com/publicsuffix/list tests/test_psl.txt, through
  Dmarc().org_domain.

A case where we deliberately differ says so beside it, with the reason.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from mx6milter.dns import Resolver
from mx6milter.evidence.auth import Dmarc, check_spf
from mx6milter.evidence.dmarc_record import parse_record

from dnsserver import DnsServer

DATA = Path(__file__).parents[1] / "data" / "outside"


# --- DMARC records -----------------------------------------------------------------------

DMARC = json.loads((DATA / "dmarc-records.json").read_text(encoding="utf-8"))
UPSTREAM_ACCEPTS = {"valid", "DMARC_PARSE_OKAY"}
UPSTREAM_REFUSES = {"invalid", "DMARC_PARSE_ERROR_EMPTY", "DMARC_PARSE_ERROR_BAD_VERSION",
                    "DMARC_PARSE_ERROR_BAD_VALUE", "DMARC_PARSE_ERROR_NO_REQUIRED_P"}


def _published_text(record: str) -> str:
    """Mail::DMARC's fixtures put "domain=NAME;" (where the record was found) before
    the record as published; the TXT record itself starts after it."""
    match = re.match(r"domain=[^;]*;", record)
    return record[match.end():] if match else record


def _outcome(record) -> str:
    if not record.is_dmarc:
        return "not-dmarc"
    return "usable" if record.usable else "unusable"


@pytest.mark.parametrize("case", DMARC["records"], ids=lambda c: c["source"][-40:])
def test_outside_dmarc_records(case):
    record = parse_record(_published_text(case["record"]))
    assert _outcome(record) == case["expect"], record.problems
    for field in ("policy", "subdomain_policy", "pct"):
        if field in case:
            assert getattr(record, field) == case[field]
    # our outcome agrees with the source's, or the case names why not
    upstream = case["upstream"]
    if upstream in UPSTREAM_ACCEPTS | UPSTREAM_REFUSES:
        agrees = (upstream in UPSTREAM_ACCEPTS) == (case["expect"] == "usable")
        assert agrees != bool(case.get("divergence")), case


def test_outside_dmarc_record_counts():
    cases = DMARC["records"]
    mail_dmarc = [c for c in cases if c["source"].startswith("Mail::DMARC")]
    opendmarc = [c for c in cases if c["source"].startswith("OpenDMARC")]
    assert len(mail_dmarc) + len(opendmarc) == len(cases)
    # every real-world record of Mail::DMARC's list is usable, keeping the rest of its tags
    real_world = [c for c in mail_dmarc if "__DATA__" in c["source"]]
    assert len(real_world) == 34
    assert all(parse_record(_published_text(c["record"])).usable for c in real_world)


def _tag_value_cases():
    values = DMARC["tag_values"]
    for verdict in ("good", "bad"):
        for tag, items in values[verdict].items():
            for value in items:
                yield tag, value, verdict, values["divergence"].get(f"{tag}={value}", "")


def _value_accepted(tag: str, value: str) -> bool:
    """Whether our parser takes VALUE for TAG as valid."""
    if tag == "v":
        return parse_record(f"v={value}; p=none").is_dmarc
    base = "v=DMARC1" if tag == "p" else "v=DMARC1; p=none"
    record = parse_record(f"{base}; {tag}={value}")
    if tag in ("p", "sp"):
        if not record.usable:
            return False
        got = record.policy if tag == "p" else record.subdomain_policy
        assert got == value.lower()
        return True
    accepted = not record.problems
    if accepted and tag in ("adkim", "aspf"):
        assert getattr(record, tag) == value.lower()
    if accepted and tag == "pct":
        assert record.pct == int(value)
    if not accepted and tag in ("adkim", "aspf", "pct"):   # a bad value: the default, record kept
        assert record.usable and getattr(record, tag) == {"pct": 100}.get(tag, "r")
    if tag in ("rua", "ruf"):
        assert bool(getattr(record, tag)) == accepted
    return accepted


@pytest.mark.parametrize("tag, value, verdict, divergence", list(_tag_value_cases()))
def test_outside_dmarc_tag_values(tag, value, verdict, divergence):
    upstream_accepts = verdict == "good"
    assert _value_accepted(tag, value) == (upstream_accepts != bool(divergence))


# --- RFC 7208 SPF test suite, each scenario served by BIND -------------------------------

SPF_SUITE = list(yaml.safe_load_all((DATA / "rfc7208-tests.yml").read_bytes()))

# Deliberate differences from the suite, by test name, with the reason.
SPF_DIVERGENT = {
    "ptr-cname-loop": (
        "temperror",
        "real DNS: BIND answers the CNAME loop with SERVFAIL (the suite's own driver returns "
        "nothing), and pyspf's ptr mechanism reports the failed A lookup as temperror instead "
        "of skipping the name (RFC 7208 5.5). A temperror makes the message fall back, the "
        "safe side; pyspf's ptr code is not ours to change."),
    "macro-mania-in-domain": (
        "fail",
        "the name the macros expand to has spaces; mx6milter.dns refuses to query names with "
        "spaces or control bytes (hostile input), so exists: finds nothing. Only an SPF "
        "record built on %_ or %- expansions is affected; left as it is."),
}

_RPZ = "rpz.invalid"    # response-policy zone: its "CNAME rpz-drop." entries make queries time out


def _label_text(label: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else
                   "".join(f"\\{b:03d}" for b in c.encode()) for c in label)


def _owner(name: str) -> str:
    return ".".join(_label_text(label) for label in name.rstrip(".").split(".")) + "."


def _txt(strings) -> str:
    if isinstance(strings, str):
        strings = [strings]
    data = [s.encode("utf-8") for s in strings] or [b""]   # a TXT record holds one string at least
    chunks = [d[i:i + 255] for d in data for i in range(0, max(len(d), 1), 255)]
    return " ".join('"' + "".join(chr(b) if 0x20 <= b < 0x7f and chr(b) not in '"\\'
                                  else f"\\{b:03d}" for b in chunk) + '"' for chunk in chunks)


def _scenario_records(zonedata: dict):
    """{name: [(type, rdata text)]} and the names all of whose lookups time out.

    The suite's conventions (described at the top of rfc7208-tests.yml): a name
    without TXT records gets its SPF-type records as TXT; "TXT: NONE" means no
    TXT record; "TIMEOUT" makes lookups of the name time out.
    """
    records, timeouts = {}, set()
    for name, entries in zonedata.items():
        name = name.lower()
        rrs, has_txt = [], any(isinstance(e, dict) and "TXT" in e for e in entries)
        for entry in entries:
            if entry == "TIMEOUT":
                # lookups of types without records listed before it time out; BIND
                # can only time out the whole name, and only TXT is asked of these
                if not any(rtype == "TXT" for rtype, _ in rrs):
                    timeouts.add(name)
                continue
            [(rtype, value)] = entry.items()
            if value == "NONE":
                continue
            if rtype == "SPF":
                if not has_txt:
                    rrs.append(("TXT", _txt(value)))
            elif rtype == "TXT":
                rrs.append(("TXT", _txt(value)))
            elif rtype == "MX":
                preference, host = value
                rrs.append(("MX", f"{preference} {_owner(host) if host else '.'}"))
            elif rtype in ("PTR", "CNAME"):
                rrs.append((rtype, _owner(value)))
            else:                       # A, AAAA
                rrs.append((rtype, value))
        records[name] = rrs
    return records, timeouts


def _zone(origin: str, records: dict) -> str:
    lines = ["$TTL 300", f"{_owner(origin) if origin != '.' else '.'} IN SOA ns.test. "
             "hostmaster.test. 1 3600 600 86400 300"]
    lines.append(f"{_owner(origin) if origin != '.' else '.'} IN NS ns.test.")
    if origin == ".":
        lines.append("ns.test. IN A 127.0.0.1")
    for name, rrs in records.items():
        lines += [f"{_owner(name)} IN {rtype} {rdata}" for rtype, rdata in rrs]
    return "\n".join(lines) + "\n"


class ScenarioDns(DnsServer):
    """BIND serving one scenario's zone data as the root zone. A name the suite times
    out is listed in a response-policy zone with the action rpz-drop: named drops
    queries for exactly that name, so the client times out, as the suite intends."""

    def __init__(self, scenario: dict):
        records, timeouts = _scenario_records(scenario["zonedata"])
        rpz = ["$TTL 300", "@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300",
               "@ IN NS ns.test."] + [f"{_owner(name)}{_RPZ}. IN CNAME rpz-drop." for name in timeouts]
        super().__init__(extra_zones={".": _zone(".", records), _RPZ: "\n".join(rpz) + "\n"},
                         template_dir=Path("/nonexistent"))

    def _write_config(self) -> None:
        super()._write_config()
        conf = (self.dir / "named.conf").read_text()
        assert "    minimal-responses no;\n" in conf
        conf = conf.replace("    minimal-responses no;\n", "    minimal-responses no;\n"
                            "    check-names primary ignore;   // foo:bar/baz.example.com\n"
                            f'    response-policy {{ zone "{_RPZ}"; }} recursive-only no;\n')
        (self.dir / "named.conf").write_text(conf)


@pytest.fixture(scope="module")
def scenario_dns():
    """The BIND of one scenario at a time (the cases run in scenario order)."""
    current = {}

    def serve(index: int) -> ScenarioDns:
        if index not in current:
            for server in current.values():
                server.close()
            current.clear()
            current[index] = ScenarioDns(SPF_SUITE[index]).start()
        return current[index]
    yield serve
    for server in current.values():
        server.close()


def _spf_cases():
    for index, scenario in enumerate(SPF_SUITE):
        for name, test in scenario["tests"].items():
            yield pytest.param(index, name, test, id=name)


@pytest.mark.parametrize("index, name, test", list(_spf_cases()))
def test_outside_rfc7208_suite(scenario_dns, index, name, test):
    resolver = Resolver([("127.0.0.1", scenario_dns(index).port)], timeout=0.5)
    result = check_spf(resolver.budget(5), test["host"], test["helo"], test["mailfrom"])
    expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
    if name in SPF_DIVERGENT:
        ours, reason = SPF_DIVERGENT[name]
        assert result.result not in expected and result.result == ours, reason
        return
    assert result.result in expected, (test.get("description"), result)
    if test.get("explanation", "DEFAULT") != "DEFAULT" and result.result == "fail":
        assert result.reason == test["explanation"]     # DEFAULT: the checker's own text


def test_outside_rfc7208_case_count():
    assert sum(len(s["tests"]) for s in SPF_SUITE) == 203


# --- Public Suffix List ------------------------------------------------------------------

PSL_LINE = re.compile(r"checkPublicSuffix\((null|'[^']*'), (null|'[^']*')\);")


def _psl_cases():
    for line in (DATA / "test_psl.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("//"):
            continue            # comments, and the cases the file itself comments out
        match = PSL_LINE.match(line)
        if match:
            yield tuple(None if v == "null" else v.strip("'") for v in match.groups())


PSL_CASES = list(_psl_cases())
# checkPublicSuffix(null, null) is not applicable: org_domain is only given domain names.
PSL_NOT_APPLICABLE = [(None, None)]


@pytest.fixture(scope="module")
def dmarc():
    return Dmarc()


@pytest.mark.parametrize("domain, expected", [c for c in PSL_CASES if c not in PSL_NOT_APPLICABLE],
                         ids=lambda v: str(v))
def test_outside_public_suffix_list(dmarc, domain, expected):
    ours = dmarc.org_domain(domain)
    if expected is None:
        # no registrable domain: org_domain gives the name itself, so discovery looks
        # only at the From domain's own record
        assert ours == domain
    else:
        assert ours == expected


def test_outside_public_suffix_list_count():
    assert len(PSL_CASES) == 78 and PSL_CASES.count((None, None)) == 1
