"""mx6ctl's greenlist verbs against a real Redis: import asn, the lists, history show."""
import json

import pytest

from mx6milter import ctl
from mx6milter.model import Message, Session, Tier

PFX2AS = """\
# CAIDA-style prefix-to-AS table
2001:db8:70::\t44\t64500
192.0.2.0\t24\t64496
2001:db8:7f::\t48\t64501
198.51.100.0\t24\t64497_64498
2001:db8:7e::\t48\t64502_64500
2001:db8:7d::\t48\t64503,64504
"""


@pytest.fixture
def config_file(tmp_path, redis_url):
    path = tmp_path / "mx6.conf"
    path.write_text(f"[redis]\nurl = {redis_url}\n[greenlist]\nhistory = yes\n"
                    "history_min_messages = 2\nhistory_min_days = 1\n")
    return str(path)


def mx6ctl(config_file, capsys, *argv):
    status = ctl.main(["-c", config_file, *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_import_asn_takes_ipv6_lines_and_counts_ipv4(config_file, capsys, tmp_path, redis_server):
    table = tmp_path / "pfx2as.txt"
    table.write_text(PFX2AS + "2001:db8:7c::1\t48\t64505\nnonsense line\n")
    status, out, err = mx6ctl(config_file, capsys, "import", "asn", str(table))
    assert status == 2 and "2 bad lines skipped, the others loaded" in err
    summary = json.loads(out)
    assert (summary["added"], summary["ipv4_skipped"], summary["rejected"]) == (4, 2, 2)
    assert summary["replace"] is True
    assert f"{table}:8: 2001:db8:7c::1/48: host bits set; skipped" in err
    assert f"{table}:9: expected PREFIX<TAB>LENGTH<TAB>ASN, got 2 fields; skipped" in err
    status, out, _ = mx6ctl(config_file, capsys, "asn", "lookup", "2001:db8:71::1",
                            "2001:db8:7f::1", "2001:db8:7e::1", "2001:db8:7d::1", "2001:db8:99::1")
    assert status == 0
    assert out.splitlines() == [
        "2001:db8:71::1\tasn=unlisted(AS64500 2001:db8:70::/44)",
        "2001:db8:7f::1\tasn=unlisted(AS64501 2001:db8:7f::/48)",
        "2001:db8:7e::1\tasn=unlisted(AS64500+AS64502 2001:db8:7e::/48)",
        "2001:db8:7d::1\tasn=unlisted(AS64503+AS64504 2001:db8:7d::/48)",
        "2001:db8:99::1\tasn=miss(no ASN for the client)",
    ]
    status, _, err = mx6ctl(config_file, capsys, "asnlist", "add", "AS64500", "64502")
    assert status == 0, err
    status, out, _ = mx6ctl(config_file, capsys, "asn", "lookup", "2001:db8:7e::1")
    assert out == "2001:db8:7e::1\tasn=pass(AS64500+AS64502 2001:db8:7e::/48)\n"


def test_import_asn_replaces_the_table(config_file, capsys, tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text(PFX2AS)
    second.write_text("2001:db8:60::\t44\t64510\n")
    assert mx6ctl(config_file, capsys, "import", "asn", str(first))[0] == 0
    status, out, _ = mx6ctl(config_file, capsys, "import", "asn", str(second))
    assert status == 0
    assert json.loads(out)["removed"] == 4
    _, out, _ = mx6ctl(config_file, capsys, "asn", "lookup", "2001:db8:71::1", "2001:db8:61::1")
    assert out.splitlines() == ["2001:db8:71::1\tasn=miss(no ASN for the client)",
                                "2001:db8:61::1\tasn=unlisted(AS64510 2001:db8:60::/44)"]


def test_import_asn_without_ipv6_lines_refuses_to_empty_the_table(config_file, capsys, tmp_path):
    table, only4 = tmp_path / "a.txt", tmp_path / "v4.txt"
    table.write_text(PFX2AS)
    only4.write_text("192.0.2.0\t24\t64496\n")
    assert mx6ctl(config_file, capsys, "import", "asn", str(table))[0] == 0
    status, _, err = mx6ctl(config_file, capsys, "import", "asn", str(only4))
    assert status == 2
    assert "no valid IPv6 entries; refusing to replace" in err
    _, out, _ = mx6ctl(config_file, capsys, "asn", "lookup", "2001:db8:71::1")
    assert "AS64500" in out                                          # the old table is intact


def test_import_asn_strict_writes_nothing(config_file, capsys, tmp_path):
    table = tmp_path / "pfx2as.txt"
    table.write_text(PFX2AS + "2001:db8:7b::\t48\tASX\n")
    status, out, _err = mx6ctl(config_file, capsys, "import", "asn", str(table), "--strict")
    assert status == 2
    assert json.loads(out)["written"] is False
    status, out, err = mx6ctl(config_file, capsys, "asn", "lookup", "2001:db8:71::1")
    assert (status, out) == (1, "")
    assert "the prefix-to-ASN table is empty; load one with: mx6ctl import asn FILE" in err


def test_import_missing_file(config_file, capsys, tmp_path):
    status, _, err = mx6ctl(config_file, capsys, "import", "asn", str(tmp_path / "nope"))
    assert status == 2 and "cannot read" in err


def test_green_add_list_remove(config_file, capsys):
    status, out, err = mx6ctl(config_file, capsys, "green", "add", "2001:db8:77::/48",
                              "--source", "partners")
    assert status == 0, err
    assert out == "added 1 new, 0 already present (value updated) in source partners\n"
    _, out, _ = mx6ctl(config_file, capsys, "green", "list")
    assert out == "2001:db8:77::/48\tsource=partners\texpires=never\n"
    status, _, err = mx6ctl(config_file, capsys, "green", "add", "192.0.2.0/24")
    assert status == 2 and "IPv4" in err
    status, out, _ = mx6ctl(config_file, capsys, "green", "remove", "2001:db8:77::/48")
    assert (status, out) == (0, "removed 1\n")


def test_asnlist_and_mishandle4xx_entries(config_file, capsys):
    assert mx6ctl(config_file, capsys, "asnlist", "add", "as64500", "--expires", "30d")[0] == 0
    _, out, _ = mx6ctl(config_file, capsys, "asnlist", "list")
    assert out.startswith("AS64500\tsource=local\texpires=20")
    status, _, err = mx6ctl(config_file, capsys, "asnlist", "add", "AS99999999999")
    assert status == 2 and "AS number" in err
    assert mx6ctl(config_file, capsys, "mishandle4xx", "add", "Bulk.Greenlist.Example.",
                  "2001:db8:55::/48")[0] == 0
    _, out, _ = mx6ctl(config_file, capsys, "mishandle4xx", "list")
    assert out.splitlines() == ["2001:db8:55::/48\tsource=local\texpires=never",
                                "bulk.greenlist.example\tsource=local\texpires=never"]
    for bad in ("com", "192.0.2.1", "2001:db8::1/16x"):
        status, _, err = mx6ctl(config_file, capsys, "mishandle4xx", "add", bad)
        assert status == 2, bad


def test_import_green_mishandle4xx_asnlist(config_file, capsys, tmp_path):
    files = {"green": "2001:db8:77::/48\n2001:db8:78::/48 expires=30d\n# comment\n",
             "mishandle4xx": "bulk.greenlist.example\n2001:db8:55::/48\nnot a line\n",
             "asnlist": "AS64500\n64501 # comment\n"}
    for kind, text in files.items():
        path = tmp_path / f"{kind}.txt"
        path.write_text(text)
        status, out, err = mx6ctl(config_file, capsys, "import", kind, str(path), "--allow-rejects")
        assert status == 0, err
        summary = json.loads(out)
        assert summary["added"] == 2, (kind, summary)
        assert summary["rejected"] == (1 if kind == "mishandle4xx" else 0)
        assert summary["replace"] is False


def test_import_rejects_options_of_other_kinds(config_file, capsys, tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("2001:db8:77::/48\n")
    for option in (["--require", "dkim"], ["--require", "dmarc"], ["--format", "csv"],
                   ["--recipient", "u@example.org"]):
        status, _, err = mx6ctl(config_file, capsys, "import", "green", str(path), *option)
        assert status == 2 and "it does not apply to import green" in err, option


def test_loaded_lists_greenlist_a_message(config_file, capsys, tmp_path, evaluator_factory):
    table = tmp_path / "pfx2as.txt"
    table.write_text(PFX2AS)
    assert mx6ctl(config_file, capsys, "import", "asn", str(table))[0] == 0
    assert mx6ctl(config_file, capsys, "asnlist", "add", "64500")[0] == 0
    evaluator = evaluator_factory("[greenlist]\nfcrdns = no\n")
    raw = b"From: a@example.net\r\n\r\nhi\r\n"
    outcome = evaluator.evaluate(Session(client_ip="2001:db8:71::1", helo="x.example",
                                         mail_from="a@example.net", recipients=["u@example.org"]),
                                 Message(headers=(("From", "a@example.net"),), raw=raw))
    assert outcome.decision.tier is Tier.GREENLISTED
    assert outcome.decision.header.startswith(
        "greenlisted; subject-to-content-filtering; evidence=asn=pass(AS64500 2001:db8:70::/44)")


def test_history_show(config_file, capsys, evaluator_factory):
    evaluator = evaluator_factory()
    _, out, _ = mx6ctl(config_file, capsys, "history", "show", "greenlist.example")
    assert out == "greenlist.example\tno IPv4 history\n"
    from mx6milter.evidence.history import History, DAY
    day = [1_800_000_000]
    history = History(evaluator.store, evaluator.config.greenlist, clock=lambda: day[0])
    history.record("greenlist.example")
    day[0] += 3 * DAY
    history.record("greenlist.example")
    _, out, _ = mx6ctl(config_file, capsys, "history", "show", "greenlist.example")
    assert out.startswith("greenlist.example\tmessages=2\tdays=3\tfirst=2027-01-15\tlast=2027-01-18")
    assert out.rstrip().endswith("\tqualifies")


def test_redis_down_exit_1(tmp_path, capsys):
    path = tmp_path / "down.conf"
    path.write_text("[redis]\nurl = redis://127.0.0.1:1/0\n")
    status, _, err = mx6ctl(str(path), capsys, "green", "add", "2001:db8::/48")
    assert status == 1 and "Redis" in err and "Traceback" not in err


# --- parsers, no I/O ---------------------------------------------------------------------------
