"""The command line as an operator meets it, against a real Redis and BIND: import's
exit status and ';' CSV, export of every kind, source remove, explain's accepting
commands (each one run, and the message then accepted) and its one line when Redis is
down, history and asn telling what is missing, and --check-config naming a bad user's
line. Exit codes are asserted throughout."""
from __future__ import annotations

import json
import shlex
import subprocess

import pytest
import redis

from ctl_runner import Ctl
from milterd import MX6MILTER
from mx6milter.ctl.import_export import IMPORT_KINDS

MESSAGE = b"From: Sender <sender@example.net>\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


@pytest.fixture
def ctl(tmp_path, redis_url):
    return Ctl(tmp_path, redis_url)


# --- import and export -------------------------------------------------------------------


def test_semicolon_csv_from_a_spreadsheet_is_imported(ctl):
    path = ctl.file("book.csv", "recipient;sender;expires\r\nalice@example.org;bob@partner.example;\r\n"
                                "carol@example.org;dave@partner.example;2030-01-01\r\n")
    run = ctl("import", "addressbook", path)
    assert run.rc == 0, run.err
    assert json.loads(run.out)["added"] == 2 and run.err == ""
    listed = ctl("addressbook", "list")
    assert listed.rc == 0
    assert "alice@example.org\tbob@partner.example" in listed.out
    assert "carol@example.org\tdave@partner.example" in listed.out


def test_bad_lines_make_import_exit_2_and_say_how_many(ctl):
    path = ctl.file("ip.txt", "2001:db8:1::/48\n10.0.0.0/8\nnonsense\n")
    run = ctl("import", "ip", path)
    assert run.rc == 2
    assert json.loads(run.out)["added"] == 1
    assert run.err.splitlines()[-1] == (f"mx6ctl: {path}: 2 bad lines skipped, the others loaded "
                                        "(--allow-rejects: exit 0 all the same)")
    allowed = ctl("import", "ip", path, "--allow-rejects")
    assert allowed.rc == 0 and allowed.err.splitlines()[-1].endswith("2 bad lines skipped, the others loaded")
    clean = ctl("import", "ip", ctl.file("good.txt", "2001:db8:2::/48\n"))
    assert clean.rc == 0 and clean.err == ""


def test_export_csv_starts_with_the_header_row(ctl):
    assert ctl("addressbook", "add", "alice@example.org", "bob@partner.example").rc == 0
    run = ctl("export", "addressbook", "--format", "csv")
    assert run.rc == 0
    assert run.out.splitlines() == ["recipient,sender,expires", "alice@example.org,bob@partner.example,"]


SAMPLES = {
    "ip": "2001:db8:1::/48\n2001:db8:2::/48 expires=2030-01-01T00:00:00Z\n",
    "domain": "partner.example require=dkim\nother.example require=dmarc\n",
    "addressbook": "alice@example.org bob@partner.example\n",
    "asn": "2001:db8:70::\t44\t64500_64501\n2001:db8:80::\t48\t64502\n",
    "green": "2001:db8:77::/48\n",
    "asnlist": "AS64500\n",
    "mishandle4xx": "2001:db8:55::/48\nbulk.greenlist.example\n",
}


def test_every_kind_import_loads_exports_and_imports_back(ctl):
    assert set(SAMPLES) == set(IMPORT_KINDS)
    for kind, text in SAMPLES.items():
        assert ctl("import", kind, ctl.file(f"{kind}.txt", text), "--source", "one").rc == 0, kind
        exported = ctl("export", kind, "--source", "one")
        assert exported.rc == 0 and "exported" in exported.err
        again = ctl("import", kind, ctl.file(f"{kind}-again.txt", exported.out), "--source", "two")
        assert again.rc == 0, (kind, again.err)
        assert json.loads(again.out)["added"] == len(text.splitlines()), (kind, exported.out)
        assert ctl("export", kind, "--source", "two").out.splitlines()[1:] == \
            exported.out.splitlines()[1:], kind             # the same entries (line 1: a comment)


def stats_rows(ctl) -> list:
    run = ctl("stats", "--json")
    assert run.rc == 0
    return [(row["kind"], row["source"]) for row in json.loads(run.out)["entries"]]


@pytest.mark.parametrize("kind", ["ip", "addressbook", "asn"])
def test_source_remove_drops_a_whole_source(ctl, kind):
    text = SAMPLES[kind]
    for source in ("feed", "local"):
        assert ctl("import", kind, ctl.file(f"{source}.txt", text), "--source", source).rc == 0
    assert {(kind, "feed"), (kind, "local")} <= set(stats_rows(ctl))
    run = ctl("source", "remove", kind, "feed")
    assert (run.rc, run.out) == (0, f"removed source feed of {kind}: {len(text.splitlines())} entries\n")
    assert (kind, "feed") not in stats_rows(ctl) and (kind, "local") in stats_rows(ctl)
    assert ctl("export", kind, "--source", "feed").err.startswith("mx6ctl: exported 0 entries")
    again = ctl("source", "remove", kind, "feed")
    assert again.rc == 1 and again.err == f"mx6ctl: {kind} has no source feed (its sources: local)\n"


def test_source_remove_refuses_a_bad_name(ctl):
    result = ctl.process("source", "remove", "ip", "bad:name")
    assert result.returncode == 2 and b"a source name is 1 to 64" in result.stderr


# --- history, asn --------------------------------------------------------------------------


def test_history_show_says_when_history_is_off(tmp_path, redis_url):
    off = Ctl(tmp_path, redis_url, extra="[greenlist]\nhistory = no\n")
    run = off("history", "show", "example.net")
    assert (run.rc, run.out) == (0, "example.net\tno IPv4 history\n")
    assert run.err == (f"mx6ctl: note: history is off ([greenlist] history = no in {off.config}): "
                       "nothing is recorded now, and the milter does not use what is shown\n")
    (tmp_path / "on").mkdir()
    on = Ctl(tmp_path / "on", redis_url, extra="[greenlist]\nhistory = yes\n")
    run = on("history", "show", "example.net")
    assert (run.rc, run.err) == (0, "")


def test_asn_lookup_on_an_empty_table_says_how_to_load_it(ctl):
    run = ctl("asn", "lookup", "2001:db8:71::1")
    assert (run.rc, run.out) == (1, "")
    assert "prefix-to-ASN table is empty; load one with: mx6ctl import asn FILE" in run.err
    assert ctl("import", "asn", ctl.file("t.txt", SAMPLES["asn"])).rc == 0
    run = ctl("asn", "lookup", "2001:db8:71::1")
    assert (run.rc, run.err) == (0, "")
    assert run.out.startswith("2001:db8:71::1\t")


# --- explain ---------------------------------------------------------------------------------


def explain_json(ctl, path, client="2001:db8:6::99", rcpts=("alice@example.org", "carol@example.org")):
    argv = ["explain", "--client-ip", client, "--helo", "mail.example.net", "--mail-from",
            "sender@example.net", "--json", str(path)]
    for rcpt in rcpts:
        argv += ["--rcpt", rcpt]
    run = ctl(*argv)
    assert run.rc == 0, run.err
    return json.loads(run.out)


def test_each_suggested_command_makes_explain_accept(tmp_path, redis_url, dns_server, dkim_keys):
    """The commands a fallback lists are run one by one (the addressbook ones together:
    every recipient must know the sender), each on an empty Redis; after each the same
    message is accepted."""
    ctl = Ctl(tmp_path, redis_url, dns_server.nameservers)
    path = ctl.file("m.eml", dkim_keys.sign(MESSAGE, "example.net"))
    assert ctl("addressbook", "add", "alice@example.org", "sender@example.net").rc == 0
    first = explain_json(ctl, path)
    assert first["tier"] == "none"
    commands = [row["command"] for row in first["would_accept"]]
    prefix = f"mx6ctl -c {ctl.config} "
    assert commands == [prefix + "ip add 2001:db8:6::99", prefix + "domain add example.net",
                        prefix + "addressbook add carol@example.org sender@example.net",
                        prefix + "green add 2001:db8:6::99"]
    groups = [[c] for c in commands if "addressbook" not in c] + \
        [[c for c in commands if "addressbook" in c]]
    for group in groups:
        redis.Redis.from_url(redis_url).flushdb()
        assert ctl("addressbook", "add", "alice@example.org", "sender@example.net").rc == 0
        for command in group:
            assert ctl(*shlex.split(command)[3:]).rc == 0, command
        after = explain_json(ctl, path)
        assert after["tier"] == ("greenlisted" if "green add" in group[0] else "whitelisted"), group
        assert after["would_accept"] == []


def test_explain_with_redis_down_prints_one_clean_line(tmp_path, dns_server):
    down = Ctl(tmp_path, "redis://127.0.0.1:1/0", dns_server.nameservers)
    result = down.process("explain", "--client-ip", "2001:db8:6::99", "--mail-from",
                          "sender@example.net", "--rcpt", "alice@example.org",
                          down.file("m.eml", MESSAGE))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"mx6ctl: Redis at redis://127.0.0.1:1/0 did not answer (is it running? see [redis] url in "
        f"{down.config}); the milter answers as above until it does"]
    assert b"action        tempfail" in result.stdout


# --- mx6milter --check-config ---------------------------------------------------------------


def test_check_config_names_the_line_of_a_bad_user(tmp_path):
    conf = tmp_path / "bad-user.conf"
    conf.write_text("# a comment\n[milter]\nsocket = unix:/tmp/x.sock\nuser = no-such-user-17\n")
    result = subprocess.run([MX6MILTER, "-c", str(conf), "--check-config"], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"mx6milter: {conf}:4: [milter] user = 'no-such-user-17': no such user\n"
    conf.write_text("[milter]\nsocket_group = no-such-group-17\n")
    result = subprocess.run([MX6MILTER, "-c", str(conf), "--check-config"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (f"mx6milter: {conf}:2: [milter] socket_group = 'no-such-group-17': "
                             "no such group\n")
