"""End to end: forwarded mail with real ARC chains through a real Postfix and the real
mx6milter daemon (evidence/arc.py). example.com signs, a mailing list adds a footer and
seals, a mailbox provider seals again, and the chain reaches Postfix over IPv6 from an
address nobody's SPF names: trusted sealers get it delivered, whitelisted via arc; an
untrusted sealer, a broken chain or a forged seal get the 451 and nothing arrives."""
from __future__ import annotations

import pytest

from dkimkeys import ArcSealer, message
from dnsserver import DnsServer
from e2e import AUTHSERV, FIRST_451, live_redis, loopback  # noqa: F401  (fixture)
from milterd import merge_ini, mx6ctl
from postfix import CONTRIB
from test_postfix_e2e import MILTER_EXTRA, contrib_milter_keys, start_mta

FORWARDER = "2001:db8:a4c::25"        # the provider's outbound host: in nobody's SPF
LIST_SAW = ("spf=pass smtp.mailfrom=alice@example.com; dkim=pass header.d=example.com; "
            "dmarc=pass header.from=example.com")
PROVIDER_SAW = "dkim=fail header.d=example.com; arc=pass"
ARC = "[arc]\ntrusted_sealers = list.example provider.example\ngreenlist = no\n"


@pytest.fixture(scope="module")
def sealers():
    return {name: ArcSealer.generate(name)
            for name in ("list.example", "provider.example", "stranger.example")}


@pytest.fixture(scope="module")
def arc_dns(dkim_keys, sealers):
    server = DnsServer(values=dkim_keys.zone_values(),
                       extra_zones={name: sealer.zone() for name, sealer in sealers.items()}).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def arc_mta(live_redis, arc_dns, tmp_path_factory):   # noqa: F811
    with loopback([FORWARDER]):
        mta = start_mta(tmp_path_factory.mktemp("arc"), live_redis, arc_dns,
                        (CONTRIB / "main.cf").read_text(),
                        {"main": lambda pf: merge_ini(contrib_milter_keys(pf.queue_dir), MILTER_EXTRA, ARC)})
        mx6ctl(mta.milter.conf, "domain", "add", "example.com")
        yield mta
        mta.close()


def forwarded(mta, dkim_keys, sealers, last="provider.example", domain=None, after=None) -> tuple:
    """(message-id, raw): signed by example.com, footed and sealed by the list, sealed by
    LAST (in the name of DOMAIN if given), then changed by AFTER if given."""
    msg_id = mta.ledger.new_id()
    original = message().replace(b"<20260302100000.1@example.com>", msg_id.encode())
    signed = dkim_keys.sign(original, "example.com", "rsa")
    footed = signed.replace(b"The figures.\r\n", b"The figures.\r\n-- \r\nlist footer\r\n")
    once = sealers["list.example"].seal(footed, LIST_SAW)
    raw = sealers[last].seal(once, PROVIDER_SAW, domain=domain)
    return msg_id, after(raw) if after else raw


def send(mta, msg_id, raw):
    return mta.ledger.send(mta.postfix.port, FORWARDER, raw, mail_from="list-bounces@list.example",
                           msg_id=msg_id)


def test_trusted_chain_is_delivered_whitelisted_via_arc(arc_mta, dkim_keys, sealers):
    msg_id, raw = forwarded(arc_mta, dkim_keys, sealers)
    reply = send(arc_mta, msg_id, raw)
    assert (reply.code, reply.stage) == (250, "data"), reply
    delivered = arc_mta.ledger.check(arc_mta.postfix)[msg_id]
    fields = delivered.header_lines()
    assert f"X-MX6-Verdict: whitelisted; evidence=domain=pass(example.com via=arc source=local); " \
           f"mode=defensive; by={AUTHSERV}" in fields
    results = [f for f in fields if f.startswith("Authentication-Results:")]
    assert len(results) == 1
    assert "; dkim=fail reason=\"body hash mismatch\" header.d=example.com" in results[0]
    assert "; arc=pass header.as-d=provider.example header.oldest-pass=0; " \
           "x-arc-spf=pass (recorded by list.example in ARC set 1) smtp.mailfrom=example.com; " in results[0]
    # the chain arrives as it was sealed: both ARC sets
    assert sum(f.startswith("ARC-Seal:") for f in fields) == 2


@pytest.mark.parametrize("case", ["untrusted", "broken", "forged"])
def test_chain_that_counts_for_nothing_gets_the_451(arc_mta, dkim_keys, sealers, case):
    if case == "untrusted":     # sealed last by the stranger, in its own name
        msg_id, raw = forwarded(arc_mta, dkim_keys, sealers, last="stranger.example")
    elif case == "broken":      # changed after the provider sealed it
        msg_id, raw = forwarded(arc_mta, dkim_keys, sealers,
                                after=lambda raw: raw.replace(b"list footer", b"changed footer"))
    else:                       # the stranger seals in the provider's name
        msg_id, raw = forwarded(arc_mta, dkim_keys, sealers, last="stranger.example",
                                domain="provider.example")
    reply = send(arc_mta, msg_id, raw)
    assert (reply.code, reply.stage) == (451, "data"), reply
    assert reply.lines[0] == FIRST_451
    text = " ".join(line.split(" ", 1)[1] for line in reply.lines)   # without "4.7.1"
    assert ("; arc=" not in text) if case == "untrusted" else ("; arc=fail " in text)
    arc_mta.ledger.check(arc_mta.postfix)
