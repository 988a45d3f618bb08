"""Hardening against a real redis-server: bad sources, credentials, TLS, ACL users."""
import subprocess
import sys

import pytest
import redis

from mx6milter.entries import EntryError
from mx6milter.store import Store, StoreUnavailable

from ctl_runner import Ctl


def raw(redis_url) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


# --- a source named "sources" ---------------------------------------------------------------


def mx6ctl(ctl: Ctl, *argv: str) -> subprocess.CompletedProcess:
    """The real command line (what an operator sees, tracebacks included)."""
    return subprocess.run([sys.executable, "-c", "import sys; from mx6milter.cli import ctl_main; "
                           "sys.exit(ctl_main())", "-c", str(ctl.config), *argv],
                          capture_output=True, text=True, timeout=60)


def test_ctl_refuses_the_source_name_sources(tmp_path, redis_url):
    run = mx6ctl(Ctl(tmp_path, redis_url), "ip", "add", "2001:db8:1::/48", "--source", "sources")
    assert run.returncode == 2 and "reserved" in run.stderr and "Traceback" not in run.stderr
    with pytest.raises(EntryError, match="reserved"):     # the store checks too (import, scripts)
        Store(raw(redis_url)).add("ip", "sources", [("", "20010db8/32", "0")])
    assert raw(redis_url).keys("*") == []     # nothing registered, nothing written


# --- a bad source does not break the lookup -------------------------------------------------


def test_lookup_skips_and_reports_a_source_whose_key_is_not_a_hash(redis_url, caplog):
    from mx6milter.entries import parse_ipv6_prefix
    from mx6milter.prefixes import ip_field
    client = raw(redis_url)
    field = ip_field(parse_ipv6_prefix("2001:db8:1::/48"))
    store = Store(client)
    store.add("ip", "local", [("", field, "0")])
    # What an older version let through (--source sources), or a hand-written key:
    client.sadd("mx6:v1:ip:sources", "sources", "by-hand")
    client.set("mx6:v1:ip:by-hand", "oops")
    for _ in range(3):
        hits = store.lookup({"ip": [("", field)], "domain": [("", "example.org")]})
        assert [(h.source, h.field) for h in hits["ip"]] == [("local", field)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings                  # once per bad key, not per lookup
    assert any("mx6:v1:ip:sources" in w for w in warnings)
    assert any("mx6:v1:ip:by-hand" in w for w in warnings)


def test_asn_lookup_skips_bad_sources_and_lists(redis_url, caplog):
    from mx6milter.entries import parse_ipv6_prefix
    from mx6milter.prefixes import ip_field
    client = raw(redis_url)
    field = ip_field(parse_ipv6_prefix("2001:db8::/32"))
    store = Store(client)
    store.add("asn", "table", [("", field, "64500 0")])
    store.add("asnlist", "local", [("", "64500", "0")])
    client.sadd("mx6:v1:asn:sources", "broken")
    client.rpush("mx6:v1:asn:broken", "x")
    client.sadd("mx6:v1:asnlist:sources", "bad-list")
    client.set("mx6:v1:asnlist:bad-list", "x")
    hits = store.lookup({"asn": [("", field)]})["asn"]
    assert sorted((h.source, h.key, h.field) for h in hits) == [
        ("local", "list", "64500"), ("table", "", field)]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "mx6:v1:asn:broken" in warned and "mx6:v1:asnlist:bad-list" in warned


# --- credentials ----------------------------------------------------------------------------


def test_explain_with_redis_down_does_not_show_the_password(tmp_path):
    ctl = Ctl(tmp_path, "redis://mx6milter:s3cr3t-pw@127.0.0.1:1/0")
    message = ctl.file("m.eml", "From: a@example.net\r\nTo: b@example.org\r\n\r\nHi\r\n")
    run = ctl("explain", "--client-ip", "2001:db8::1", "--mail-from", "a@example.net",
              "--rcpt", "b@example.org", message)
    assert run.rc == 1 and "redis://mx6milter:***@127.0.0.1:1/0" in run.err
    assert "s3cr3t" not in run.out + run.err


# --- password_file, the README's ACL users, TLS ---------------------------------------------

import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from mx6milter.config import load_config  # noqa: E402
from mx6milter.evaluate import Outcome  # noqa: E402
from mx6milter.evidence.history import History  # noqa: E402
from mx6milter.journal import Journal  # noqa: E402
from mx6milter.model import (Action, Decision, Evidence, Finding, Reply, Session,  # noqa: E402
                             SessionClass, Tier)
from mx6milter.service import build_evaluator  # noqa: E402

from servers import free_port, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-pw-for-the-tests"
PASSWORDS = {"MILTER-PASSWORD": "milter-pw-for-the-tests", "CTL-PASSWORD": "ctl-pw-for-the-tests"}


def readme_acl_lines() -> list:
    lines = re.findall(r"^\s+(ACL SETUSER .+)$", (ROOT / "README.rst").read_text(), re.MULTILINE)
    assert len(lines) == 2, lines
    return lines


class SecuredRedis:
    """redis-server with the README's ACL users and a default user that needs a password;
    with ``tls`` it listens only on a TLS port, with a certificate for 127.0.0.1."""

    def __init__(self, directory: Path, tls: bool = False):
        self.dir, self.port, self.tls = directory, free_port(), tls
        args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory)]
        if tls:
            self.ca = make_ca_and_cert(directory)
            args += ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", str(directory / "server.pem"),
                     "--tls-key-file", str(directory / "server.key"),
                     "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        self.process = subprocess.Popen([shutil.which("redis-server"), *args],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, what="secured redis-server")
        admin = self.admin(nopass=True)
        for line in readme_acl_lines():
            for placeholder, password in PASSWORDS.items():
                line = line.replace(placeholder, password)
            admin.execute_command(*line.split())
        admin.execute_command("ACL", "SETUSER", "reader", "on", ">reader-pw", "resetkeys",
                              "~mx6:*", "-@all", "+@read", "+ping")
        admin.execute_command("ACL", "SETUSER", "default", ">" + ADMIN)

    def url(self, user: str = "") -> str:
        scheme = "rediss" if self.tls else "redis"
        query = f"?ssl_ca_certs={self.ca}&ssl_check_hostname=true" if self.tls else ""
        return f"{scheme}://{user + '@' if user else ''}127.0.0.1:{self.port}/0{query}"

    def admin(self, nopass: bool = False) -> redis.Redis:
        return redis.Redis.from_url(self.url(), password=None if nopass else ADMIN,
                                    decode_responses=True)

    def _answers(self) -> bool:
        try:
            return self.admin(nopass=True).ping()
        except redis.exceptions.ConnectionError:
            return False

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def make_ca_and_cert(directory: Path) -> Path:
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mx6 test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return directory / "ca.pem"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    server = SecuredRedis(tmp_path_factory.mktemp("secured-redis"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def secured_tls(tmp_path_factory):
    server = SecuredRedis(tmp_path_factory.mktemp("tls-redis"), tls=True)
    yield server
    server.close()


def ctl_as(tmp_path: Path, server: SecuredRedis, user: str, password: str) -> Ctl:
    (tmp_path / f"{user}.pw").write_text(password + "\n")
    (tmp_path / f"{user}.pw").chmod(0o600)
    return Ctl(tmp_path, server.url(user),
               extra=f"[redis]\npassword_file = {tmp_path / f'{user}.pw'}\n")


def milter_config(tmp_path: Path, server: SecuredRedis):
    (tmp_path / "milter.pw").write_text(PASSWORDS["MILTER-PASSWORD"] + "\n")
    (tmp_path / "milter.pw").chmod(0o600)
    path = tmp_path / "milter.conf"
    path.write_text(f"[redis]\nurl = {server.url('mx6milter')}\n"
                    f"password_file = {tmp_path / 'milter.pw'}\n")
    return load_config(str(path))


def check_milter_and_ctl_users(tmp_path: Path, server: SecuredRedis) -> None:
    server.admin().flushall()
    ctl = ctl_as(tmp_path, server, "mx6ctl", PASSWORDS["CTL-PASSWORD"])
    assert ctl("ip", "add", "2001:db8:1::/48", "--source", "feed").rc == 0
    feed = ctl.file("feed.txt", "2001:db8:2::/48\n2001:db8:3::/48\n")
    assert ctl("import", "ip", feed, "--source", "feed", "--replace").rc == 0
    assert ctl("domain", "add", "partner.example").rc == 0
    assert ctl("ip", "list").out.count("\n") == 2
    assert ctl("stats").rc == 0
    assert ctl("ip", "remove", "2001:db8:2::/48").rc == 0

    config = milter_config(tmp_path, server)
    store = build_evaluator(config).store
    assert store.ping()
    assert store.check_schema() == 1                            # the start-up check
    server.admin().script_flush()          # as after a Redis restart: SCRIPT LOAD, then EVALSHA
    from mx6milter.entries import parse_ipv6_prefix
    from mx6milter.prefixes import ip_field
    field = ip_field(parse_ipv6_prefix("2001:db8:3::/48"))
    hits = store.lookup({"ip": [("", field)], "domain": [("", "partner.example")]})
    assert [h.source for h in hits["ip"]] == ["feed"] and len(hits["domain"]) == 1
    History(store, config.greenlist).record("example.net")      # [greenlist] history writes
    assert History(store, config.greenlist).read("example.net").count == 1
    with pytest.raises(redis.exceptions.NoPermissionError):     # but no whitelist writes
        store.add("ip", "local", [("", field, "0")])
    assert store.learn_addressbooks("learned", {"a@example.org": ["b@example.net"]},  # learning
                                    2 ** 31, 86400, 10) == 0
    store.cache_rdap("domain", "example.net", "292 0 public 0", 60)   # the RDAP cache
    rdap = store.lookup({"rdap": [("example.net", "domain")]})["rdap"]
    assert [h.value for h in rdap] == ["292 0 public 0"]
    with pytest.raises(StoreUnavailable, match="permission"):   # but not a primed addressbook
        store.learn_addressbooks("local", {"a@example.org": ["b@example.net"]}, 2 ** 31, 86400, 10)
    # The journal: a fallback recorded and recovered by the milter's user, read by mx6ctl's.
    journal = Journal(store, config.report)
    outcome = Outcome(Evidence(SessionClass.IPV6, checks=(Finding("ip", "miss"),)),
                      Decision(Tier.NONE, Action.TEMPFAIL, ("no-positive-evidence",),
                               Reply("451", "4.7.1", ("retry over IPv4",))), None, 1.0)
    session = Session(client_ip="2001:db8:9::1", mail_from="a@example.net",
                      recipients=["b@example.org"], queue_id="4ACL1")
    journal.decision(session, outcome, "<1@example.net>", "a@example.net")
    journal.ipv4(session, "<1@example.net>", "a@example.net")
    assert journal.flush() and (journal.failed, journal.recovered) == (0, 1)
    assert json.loads(ctl("report", "--json").out)["recovered_over_ipv4"]["count"] == 1
    assert ctl("why", "4ACL1").rc == 0


def test_milter_and_mx6ctl_work_with_the_readme_acl_users(tmp_path, secured):
    check_milter_and_ctl_users(tmp_path, secured)


def test_the_same_over_tls_with_a_private_ca(tmp_path, secured_tls):
    check_milter_and_ctl_users(tmp_path, secured_tls)
    with pytest.raises(redis.exceptions.ConnectionError):       # TLS really is required
        redis.Redis(port=secured_tls.port, password=ADMIN, socket_timeout=2).ping()


def test_mx6ctl_with_a_read_only_user_fails_cleanly(tmp_path, secured):
    secured.admin().flushall()
    reader = ctl_as(tmp_path, secured, "reader", "reader-pw")
    assert reader("ip", "list").rc == 0
    run = mx6ctl(reader, "ip", "add", "2001:db8:1::/48")
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "permission" in run.stderr
    assert "is it running" not in run.stderr
    assert secured.admin().keys("*") == []


def test_wrong_password_fails_cleanly_and_is_not_shown(tmp_path, secured):
    wrong = ctl_as(tmp_path, secured, "mx6ctl", "not-the-password")
    run = mx6ctl(wrong, "ip", "list")
    assert run.returncode == 1 and "Traceback" not in run.stderr and "not-the-password" not in \
        run.stderr, run.stderr
