"""`mx6ctl plan`, `dns` and `check-domain` against a real BIND on loopback serving the
proposal's two example zones (tests/data/zones/{only4,with6}.example.zone) and a few
departures from the proposal."""
import contextlib
import io
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from mx6milter import ctl

from dnsserver import DnsServer, ZONE_TEMPLATES
from milterd import MX6CTL
from servers import free_port

ROOT = Path(__file__).resolve().parents[2]

DEPARTS = """$TTL 300
@               IN SOA  ns hostmaster 1 3600 600 86400 300
                IN NS   ns
ns              IN A    127.0.0.1
@               IN MX   0 mx
mx              IN A    192.0.2.1
mx              IN AAAA 2001:db8:1::1
_mx6._tcp       IN SRV  0 0 2525 mx6
_mx6._tcp       IN SRV  1 0 25 v4only
_mx6._tcp       IN SRV  2 0 25 alias
mx6             IN A    192.0.2.2
mx6             IN AAAA 2001:db8:1::2
v4only          IN A    192.0.2.3
alias           IN CNAME mx6
"""

# The proposal's records, exactly: the AAAA is IPv4-mapped.
PROPOSAL = """$TTL 300
@               IN SOA  ns hostmaster 1 3600 600 86400 300
                IN NS   ns
ns              IN A    127.0.0.1
@               IN MX   0 mx
mx              IN A    10.0.0.2
_mx6._tcp       IN SRV  0 0 25 mx6
mx6             IN A    10.0.0.2
mx6             IN AAAA 0:0:0:0:0:ffff:a00:2
"""

NULL_MX = """$TTL 300
@               IN SOA  ns hostmaster 1 3600 600 86400 300
                IN NS   ns
ns              IN A    127.0.0.1
@               IN MX   0 .
"""


def serve(template_names, extra=None):
    directory = Path(tempfile.mkdtemp(prefix="mx6-zones-"))
    for name in template_names:
        shutil.copy(ZONE_TEMPLATES / f"{name}.zone", directory)
    server = DnsServer(template_dir=directory, extra_zones=extra or {}).start()
    server.template_copy = directory
    return server


def close(server):
    server.close()
    shutil.rmtree(server.template_copy, ignore_errors=True)


@pytest.fixture(scope="module")
def bind():
    server = serve(["only4.example", "with6.example"],
                   {"departs.example": DEPARTS, "proposal.example": PROPOSAL,
                    "nullmx.example": NULL_MX})
    yield server
    close(server)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def mx6ctl(*args, config="/nonexistent/mx6milter.conf"):
    """mx6ctl's main() in this process (a subprocess costs a second of imports here)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = ctl.main(["-c", config, *args])
        except SystemExit as exit_:            # argparse
            code = exit_.code
    return Run(code, out.getvalue(), err.getvalue())


def test_the_installed_command_runs_the_verbs(bind):
    result = subprocess.run([MX6CTL, "-c", "/nonexistent", "plan", "--nameserver",
                             bind.nameservers, "only4.example"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2] == "Connects via IPv4 to 127.0.6.1"
    bad = subprocess.run([MX6CTL, "-c", "/nonexistent", "plan", "--nameserver",
                          bind.nameservers, "bad domain"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("mx6ctl: ")


def plan(bind, *args):
    return mx6ctl("plan", "--nameserver", bind.nameservers, *args)


def new_queries(bind, before):
    return bind.queries()[before:]


# --- plan: the proposal's scenarios, and the lookups behind them -------------------------


def test_plan_aware_sender_to_aware_receiver(bind):
    before = bind.query_count()
    result = plan(bind, "with6.example")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:5] == [
        'Looks up "SRV _mx6._tcp.with6.example"',
        "Gets mx6.with6.example and then 127.0.6.2 and 2001:db8:66::2",
        "Connects via IPv6 to 2001:db8:66::2",
        "Proceeds as usual",
        "If after the DATA phase it gets 550 5.5.7: connects via IPv4 to 127.0.6.2",
    ]
    assert new_queries(bind, before) == [("_mx6._tcp.with6.example", "SRV"),
                                         ("mx6.with6.example", "A"), ("mx6.with6.example", "AAAA")]


def test_plan_aware_sender_to_unaware_receiver(bind):
    before = bind.query_count()
    result = plan(bind, "only4.example")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'Looks up "SRV _mx6._tcp.only4.example"',
        "Gets nothing",
        'Looks up "MX only4.example"',
        "Gets mx.only4.example and then 127.0.6.1",
        "Connects via IPv4 to 127.0.6.1",
        "Proceeds as usual",
    ]
    assert new_queries(bind, before) == [("_mx6._tcp.only4.example", "SRV"),
                                         ("only4.example", "MX"), ("mx.only4.example", "A")]


def test_plan_unaware_sender_to_aware_receiver(bind):
    before = bind.query_count()
    result = plan(bind, "--unaware", "WITH6.example.")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'Looks up "MX with6.example"',
        "Gets mx.with6.example and then 127.0.6.2",
        "Connects via IPv4 to 127.0.6.2",
        "Proceeds as usual",
    ]
    assert new_queries(bind, before) == [("with6.example", "MX"), ("mx.with6.example", "A"),
                                         ("mx.with6.example", "AAAA")]


def test_plan_json_and_config_nameservers(bind, tmp_path):
    conf = tmp_path / "mx6milter.conf"
    conf.write_text(f"[dns]\nnameservers = {bind.nameservers}\n"
                    "[policy]\nmx6_code = 551\nmx6_status = 5.7.26\n")
    result = mx6ctl("plan", "--json", "with6.example", config=str(conf))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["route"] == "srv"
    assert [(a["address"], a["family"], a["port"]) for a in data["attempts"]] == [
        ("2001:db8:66::2", 6, 25), ("127.0.6.2", 4, 25)]
    assert "If after the DATA phase it gets 551 5.7.26: connects via IPv4 to 127.0.6.2" \
        in data["steps"]


def test_plan_temporary_dns_failure_exit_75():
    result = mx6ctl("plan", "--nameserver", f"127.0.0.1:{free_port()}", "--dns-timeout", "0.5",
                    "with6.example")
    assert result.returncode == 75
    assert "Gets a temporary DNS failure" in result.stdout
    assert "MX" not in result.stdout.split("\n", 1)[1]       # not mistaken for "no SRV"


def test_plan_null_mx(bind):
    result = plan(bind, "--unaware", "nullmx.example")
    assert result.returncode == 0
    assert 'Gets a null MX ("."): nullmx.example accepts no mail' in result.stdout


@pytest.mark.parametrize("args", [
    ["plan", "--nameserver", "127.0.0.1", "bad domain"],
    ["plan", "--nameserver", "not-an-address", "with6.example"],
    ["plan", "with6.example"],                                   # no such config file
    ["check-domain", "--nameserver", "127.0.0.1", "x..example"],
    ["dns", "--domain", "with6.example", "--mx6-host", "mx6.with6.example",
     "--ipv4", "10.0.0.2", "--ipv6", "::ffff:a00:2"],
    ["dns", "--domain", "with6.example", "--mx6-host", "mx.with6.example",
     "--ipv4", "10.0.0.2", "--ipv6", "2001:db8::2"],
    ["send", "--nameserver", "127.0.0.1", "--from", "a@b.example", "--to", "bad address",
     "/etc/hostname"],
    ["send", "--nameserver", "127.0.0.1", "--from", "a@b.example", "--to", "u@with6.example",
     "/nonexistent/message"],
    ["send", "--nameserver", "127.0.0.1", "--from", "a@b.example", "--to", "u@with6.example",
     "--source-ipv6", "127.0.0.1", "/etc/hostname"],
    ["send", "--nameserver", "127.0.0.1", "--from", "a@b.example", "--to", "u@with6.example",
     "--timeout", "-1", "/etc/hostname"],
    ["send", "--nameserver", "127.0.0.1", "--from", "a@b.example", "--to", "u@with6.example",
     "/tmp"],
    ["plan", "--nameserver", "127.0.0.1", "--port", "70000", "with6.example"],
    ["plan", "--nameserver", "127.0.0.1", "--dns-timeout", "-1", "with6.example"],
    ["plan", "--nameserver", "127.0.0.1", "--dns-timeout", "nan", "with6.example"],
    ["dns", "--domain", "with6.example", "--mx6-host", "mx6.with6.example",
     "--ipv4", "10.0.0.2", "--ipv6", "2001:db8::2", "--ttl", "-5"],
])
def test_bad_input_is_one_clear_line_and_exit_2(args):
    result = mx6ctl(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("mx6ctl: ") and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


# --- dns and check-domain ----------------------------------------------------------------


def test_published_records_conform(tmp_path):
    """What `mx6ctl dns` prints, served by BIND, passes `mx6ctl check-domain`."""
    out = mx6ctl("dns", "--domain", "pub.example", "--mx6-host", "mx6.pub.example",
                 "--ipv4", "192.0.2.25", "--ipv6", "2001:db8:25::25")
    assert out.returncode == 0, out.stderr
    zone = ("$TTL 300\n@ IN SOA ns.pub.example. h.pub.example. 1 3600 600 86400 300\n"
            "@ IN NS ns.pub.example.\nns IN A 127.0.0.1\n" + out.stdout)
    server = serve([], {"pub.example": zone})
    try:
        result = mx6ctl("check-domain", "--nameserver", server.nameservers, "pub.example")
    finally:
        close(server)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [
        "OK    MX host mx.pub.example: IPv4 only (192.0.2.25)",
        "OK    SRV target mx6.pub.example (priority 0, weight 0, port 25): "
        "IPv6 2001:db8:25::25, IPv4 fallback 192.0.2.25",
    ]


def test_contrib_example_zones_conform():
    directory = ROOT / "contrib" / "zones"
    server = DnsServer(template_dir=directory).start()
    try:
        with6 = mx6ctl("check-domain", "--nameserver", server.nameservers, "with6.example")
        only4 = mx6ctl("check-domain", "--nameserver", server.nameservers, "only4.example")
        steps = mx6ctl("plan", "--nameserver", server.nameservers, "with6.example")
    finally:
        server.close()
    assert with6.returncode == 0, with6.stdout
    assert only4.returncode == 0 and "does not offer MX6" in only4.stdout
    assert steps.stdout.splitlines()[1] == "Gets mx6.with6.example and then 10.0.0.2 and 2001:db8:6::25"


def test_check_domain_warns_where_it_departs(bind):
    result = mx6ctl("check-domain", "--nameserver", bind.nameservers, "departs.example")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    expected = [
        "WARN  MX host mx.departs.example has AAAA 2001:db8:1::1",
        "WARN  SRV target mx6.departs.example (priority 0, weight 0, port 2525): port 2525",
        "WARN  SRV target v4only.departs.example (priority 1, weight 0, port 25): no (real) AAAA",
        "WARN  SRV target alias.departs.example (priority 2, weight 0, port 25): is an alias (CNAME)",
    ]
    for start in expected:
        assert any(line.startswith(start) for line in lines), (start, lines)
    data = json.loads(mx6ctl("check-domain", "--json", "--nameserver", bind.nameservers,
                             "departs.example").stdout)
    assert data["departs"] is True and not data["temporary"]


def test_check_domain_flags_the_proposals_ipv4_mapped_aaaa(bind):
    result = mx6ctl("check-domain", "--nameserver", bind.nameservers, "proposal.example")
    assert result.returncode == 1
    assert "AAAA ::ffff:a00:2 is IPv4-mapped, which is IPv4 on the wire" in result.stdout
    assert "OK    MX host mx.proposal.example: IPv4 only (10.0.0.2)" in result.stdout


def test_check_domain_of_the_test_zones(bind):
    with6 = mx6ctl("check-domain", "--nameserver", bind.nameservers, "with6.example")
    assert with6.returncode == 0, with6.stdout
    only4 = mx6ctl("check-domain", "--nameserver", bind.nameservers, "only4.example")
    assert only4.returncode == 0
    assert "NOTE  no SRV _mx6._tcp.only4.example" in only4.stdout
    null = mx6ctl("check-domain", "--nameserver", bind.nameservers, "nullmx.example")
    assert null.returncode == 1 and "null MX" in null.stdout


def test_check_domain_temporary_failure_exit_75():
    result = mx6ctl("check-domain", "--nameserver", f"127.0.0.1:{free_port()}",
                    "--dns-timeout", "0.5", "with6.example")
    assert result.returncode == 75
    assert "temporary DNS failure" in result.stdout
