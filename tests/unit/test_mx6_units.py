"""MX6 pure logic, no I/O: SRV ordering, the plan in the proposal's words, the
published records, SMTP reply parsing and the sender's input checks."""
import collections
import random

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from mx6milter.outbound import plan as mx6
from mx6milter.outbound import sender, zone
from mx6milter.dns import DnsTempError


def srv(priority, weight, port, target):
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV,
                               f"{priority} {weight} {port} {target}.")


# --- RFC 2782 ordering -------------------------------------------------------------


def mx(preference, exchange):
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.MX, f"{preference} {exchange}.")


def test_srv_priority_ascending_before_weight():
    records = [srv(20, 100, 25, "c.example"), srv(10, 0, 25, "b.example"),
               srv(10, 0, 25, "a.example"), srv(30, 1, 25, "d.example")]
    ordered = mx6.processing_order(records)
    assert [r.priority for r in ordered] == [10, 10, 20, 30]
    assert sorted(ordered, key=str) == sorted(records, key=str)


def test_srv_weights_are_proportions_within_a_priority():
    random.seed(7)            # dnspython draws from the random module; a fixed sequence here
    records = [srv(0, 90, 25, "heavy.example"), srv(0, 10, 25, "light.example")]
    firsts = collections.Counter(mx6.processing_order(records)[0].target.to_text()
                                 for _ in range(4000))
    share = firsts["heavy.example."] / 4000
    assert 0.86 < share < 0.94, share


def test_srv_zero_weight_is_rarely_first_but_never_lost():
    random.seed(3)
    records = [srv(0, 0, 25, "zero.example"), srv(0, 50, 25, "w.example")]
    orders = [tuple(r.target.to_text() for r in mx6.processing_order(records)) for _ in range(2000)]
    assert all(sorted(o) == ["w.example.", "zero.example."] for o in orders)
    zero_first = sum(o[0] == "zero.example." for o in orders) / 2000
    assert zero_first < 0.05


def test_mx_preference_ascending_equal_ones_shuffled():
    random.seed(5)
    records = [mx(20, "c.example"), mx(10, "a.example"), mx(10, "b.example"), mx(5, "first.example")]
    orders = {tuple(r.exchange.to_text() for r in mx6.processing_order(records)) for _ in range(200)}
    assert orders == {("first.example.", "a.example.", "b.example.", "c.example."),
                      ("first.example.", "b.example.", "a.example.", "c.example.")}
    assert mx6.processing_order([]) == []


# --- the plan in words ---------------------------------------------------------------


def proposal_with6_plan():
    # The proposal's own records: 10.0.0.2 and ::ffff:a00:2.
    host = mx6.Host("mx6.with6.example", 25, 0, 0, ("10.0.0.2",), ("::ffff:a00:2",))
    return mx6.Plan("with6.example", True, "srv", (host,),
                    (("_mx6._tcp.with6.example", "SRV"), ("mx6.with6.example", "A"),
                     ("mx6.with6.example", "AAAA")))


def test_describe_both_aware_in_the_proposals_words():
    lines = mx6.describe(proposal_with6_plan())
    assert lines[:4] == [
        'Looks up "SRV _mx6._tcp.with6.example"',
        "Gets mx6.with6.example and then 10.0.0.2 and ::ffff:a00:2",
        "Connects via IPv6 to ::ffff:a00:2",
        "Proceeds as usual",
    ]
    assert "If after the DATA phase it gets 550 5.5.7: connects via IPv4 to 10.0.0.2" in lines


def test_describe_aware_sender_unaware_receiver():
    host = mx6.Host("mx.only4.example", 25, 0, 0, ("10.0.0.1",))
    plan = mx6.Plan("only4.example", True, "mx", (host,), srv_absent="nothing", families=(4,))
    assert mx6.describe(plan) == [
        'Looks up "SRV _mx6._tcp.only4.example"',
        "Gets nothing",
        'Looks up "MX only4.example"',
        "Gets mx.only4.example and then 10.0.0.1",
        "Connects via IPv4 to 10.0.0.1",
        "Proceeds as usual",
    ]


def test_describe_unaware_sender():
    host = mx6.Host("mx.with6.example", 25, 0, 0, ("10.0.0.2",))
    plan = mx6.Plan("with6.example", False, "mx", (host,))
    assert mx6.describe(plan) == [
        'Looks up "MX with6.example"',
        "Gets mx.with6.example and then 10.0.0.2",
        "Connects via IPv4 to 10.0.0.2",
        "Proceeds as usual",
    ]


def test_describe_temporary_failure_is_not_absence():
    plan = mx6.Plan("with6.example", True, "none", (), (("_mx6._tcp.with6.example", "SRV"),),
                    ("_mx6._tcp.with6.example/SRV: timed out",))
    lines = mx6.describe(plan)
    assert lines[1] == "Gets a temporary DNS failure: _mx6._tcp.with6.example/SRV: timed out"
    assert not any("MX" in line for line in lines[1:])
    assert plan.temporary and plan.attempts() == []


def test_attempts_ipv6_before_ipv4_within_a_host_and_hosts_in_order():
    hosts = (mx6.Host("a.example", 25, 0, 0, ("192.0.2.1",), ("2001:db8::1",)),
             mx6.Host("b.example", 2525, 1, 0, ("192.0.2.2",), ()))
    plan = mx6.Plan("x.example", True, "srv", hosts)
    assert [(a.address, a.family, a.port) for a in plan.attempts()] == [
        ("2001:db8::1", 6, 25), ("192.0.2.1", 4, 25), ("192.0.2.2", 4, 2525)]
    ipv4_only = mx6.Plan("x.example", True, "mx", hosts, families=(4,))
    assert [a.family for a in ipv4_only.attempts()] == [4, 4]


class StubResolver:
    """Pure-logic stand-in: a dict of (name, type) -> rdata texts or an exception."""

    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def query(self, name, rdtype):
        self.asked.append((name, rdtype))
        value = self.answers.get((name, rdtype), [])
        if isinstance(value, Exception):
            raise value
        return [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
                for text in value]


def test_a_failed_address_lookup_keeps_the_rest_and_marks_the_plan_temporary():
    resolver = StubResolver({
        ("_mx6._tcp.x.example", "SRV"): ["0 0 25 t.x.example."],
        ("t.x.example", "A"): ["192.0.2.7"],
        ("t.x.example", "AAAA"): DnsTempError("t.x.example/AAAA: timed out"),
    })
    plan = mx6.resolve_plan(resolver, "X.Example.")
    assert plan.domain == "x.example"
    assert plan.temporary and plan.hosts[0].errors == ("t.x.example/AAAA: timed out",)
    assert [(a.address, a.family) for a in plan.attempts()] == [("192.0.2.7", 4)]
    assert "temporary DNS failure" in mx6.describe(plan)[1]


def test_srv_dot_target_means_mx_over_ipv4_only():
    resolver = StubResolver({
        ("_mx6._tcp.x.example", "SRV"): ["0 0 0 ."],
        ("x.example", "MX"): ["10 mx.x.example."],
        ("mx.x.example", "A"): ["192.0.2.9"],
    })
    plan = mx6.resolve_plan(resolver, "x.example")
    assert plan.route == "mx" and plan.srv_absent == "dot"
    assert resolver.asked == [("_mx6._tcp.x.example", "SRV"), ("x.example", "MX"),
                              ("mx.x.example", "A")]          # no AAAA on the MX route
    assert mx6.describe(plan)[1] == 'Gets "." (MX6 is decidedly not offered)'


def test_null_mx_and_implicit_mx():
    null = mx6.resolve_plan(StubResolver({("x.example", "MX"): ["0 ."]}), "x.example", aware=False)
    assert null.route == "null-mx" and null.attempts() == [] and not null.temporary
    implicit = mx6.resolve_plan(StubResolver({("x.example", "A"): ["192.0.2.3"]}), "x.example",
                                aware=False)
    assert implicit.route == "implicit-mx"
    assert [a.address for a in implicit.attempts()] == ["192.0.2.3"]
    assert "Gets nothing, so uses x.example itself (the implicit MX)" in mx6.describe(implicit)


def test_hostile_answers_are_capped():
    resolver = StubResolver({
        ("x.example", "MX"): [f"{i} mx{i}.x.example." for i in range(200)],
        **{(f"mx{i}.x.example", "A"): [f"192.0.2.{j}" for j in range(1, 60)] for i in range(200)},
    })
    plan = mx6.resolve_plan(resolver, "x.example", aware=False)
    assert len(plan.hosts) == mx6.MAX_HOSTS
    assert all(len(h.ipv4) == mx6.MAX_ADDRESSES for h in plan.hosts)
    assert len(resolver.asked) == 1 + 2 * mx6.MAX_HOSTS


@pytest.mark.parametrize("bad", ["", ".", "a b.example", "-" * 70 + ".example", "x..example",
                                 "exa$mple.com", "x.example\r\nRCPT TO:<y>"])
def test_bad_domain_names_are_refused(bad):
    with pytest.raises(mx6.BadName):
        mx6.normalize_domain(bad)


def test_unicode_domain_becomes_a_label():
    assert mx6.normalize_domain("Bücher.example") == "xn--bcher-kva.example"


# --- the records a receiver publishes --------------------------------------------


def test_zone_records_as_the_proposal_asks():
    lines = zone.zone_records("with6.example", "mx6.with6.example", ["10.0.0.2"], ["2001:db8::2"])
    records = [line.split() for line in lines if not line.startswith(";")]
    assert records == [
        ["with6.example.", "IN", "MX", "0", "mx.with6.example."],
        ["mx.with6.example.", "IN", "A", "10.0.0.2"],
        ["_mx6._tcp.with6.example.", "IN", "SRV", "0", "0", "25", "mx6.with6.example."],
        ["mx6.with6.example.", "IN", "A", "10.0.0.2"],
        ["mx6.with6.example.", "IN", "AAAA", "2001:db8::2"],
    ]


@pytest.mark.parametrize("kwargs, message", [
    (dict(ipv6=["::ffff:10.0.0.2"]), "IPv4-mapped"),
    (dict(ipv6=["10.0.0.2"]), "not an IPv6"),
    (dict(ipv4=["2001:db8::1"]), "not an IPv4"),
    (dict(ipv4=[]), "at least one IPv4"),
    (dict(mx_host="mx6.with6.example"), "must differ"),
    (dict(port=0), "bad port"),
    (dict(domain="bad domain"), "not a domain"),
])
def test_zone_records_refuse_what_would_break_the_proposal(kwargs, message):
    args = dict(domain="with6.example", mx6_host="mx6.with6.example", ipv4=["10.0.0.2"],
                ipv6=["2001:db8::2"])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        zone.zone_records(**args)


def test_zone_records_warn_about_another_port():
    lines = zone.zone_records("with6.example", "mx6.with6.example", ["10.0.0.2"], ["2001:db8::2"],
                             port=2525)
    assert any(line.startswith("; WARNING: port 2525") for line in lines)


# --- the sender's parsing -------------------------------------------------------------


@pytest.mark.parametrize("lines, status", [
    (["5.5.7 Fall back to IPv4"], "5.5.7"),
    (["5.5.7"], "5.5.7"),
    (["Fall back 5.5.7"], ""),
    (["4.5.7 wrong class"], ""),
    (["5.5.77x"], ""),
    ([], ""),
])
def test_enhanced_status_of_a_reply(lines, status):
    assert sender.ServerReply(550, lines).status == status


@pytest.mark.parametrize("code, lines, aware, expected", [
    (550, ["5.5.7 Fall back to IPv4"], True, True),
    (550, ["5.5.7-"], True, False),               # not a status code followed by text
    (550, ["5.1.1 No such user"], True, False),   # basic code alone is not enough
    (554, ["5.5.7 Fall back to IPv4"], True, False),
    (550, ["Fall back to IPv4"], True, False),
    (550, ["5.5.7 Fall back to IPv4"], False, False),   # a plain sender does not know it
])
def test_fallback_reply_needs_basic_and_enhanced_code(code, lines, aware, expected):
    s = sender.Sender(None, sender.Options(aware=aware))
    assert s.is_fallback(sender.ServerReply(code, lines)) is expected


def test_configured_fallback_code_is_recognised():
    s = sender.Sender(None, sender.Options(fallback_code="551", fallback_status="5.7.26"))
    assert s.is_fallback(sender.ServerReply(551, ["5.7.26 please use IPv4"]))
    assert not s.is_fallback(sender.ServerReply(550, ["5.5.7 Fall back to IPv4"]))


def test_wire_data_crlf_and_dot_stuffing():
    assert sender.wire_data(b"Subject: x\n\n.hidden\n..two\nlast") == \
        b"Subject: x\r\n\r\n..hidden\r\n...two\r\nlast\r\n"
    assert sender.wire_data(b"a\r\nb\rc\r\n") == b"a\r\nb\r\nc\r\n"
    assert sender.wire_data(b"a\r\n.\r\nb\r\n") == b"a\r\n..\r\nb\r\n"   # no early end


@pytest.mark.parametrize("bad", ["", "user", "@example.org", "a b@example.org",
                                 "user@example.org>\r\nRCPT TO:<x@y", "us(er)@example.org",
                                 "user@exa mple.org", "üser@example.org", "x" * 300 + "@e.org",
                                 "user@"])
def test_hostile_envelope_addresses_are_refused(bad):
    with pytest.raises(sender.BadSendOption):
        sender.check_address(bad, "recipient")


def test_null_sender_allowed_only_where_asked():
    assert sender.check_address("<>", "sender", empty_ok=True) == ""
    with pytest.raises(sender.BadSendOption):
        sender.check_address("<>", "recipient")


def test_one_idna_for_mail_domains_and_mx6_names():
    """IDNA 2008 everywhere: dnspython's default (IDNA 2003) made straße.example
    strasse.example here and xn--strae-oqa.example in the whitelists."""
    from mx6milter.addresses import domain_to_ascii
    for name in ("straße.example", "Bücher.example", "mx6.example."):
        assert mx6.normalize_domain(name) == domain_to_ascii(name)
    assert mx6.normalize_domain("_mx6._tcp.example") == "_mx6._tcp.example"
