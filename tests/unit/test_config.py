"""Configuration parsing, errors that name the line, and docs that match the code."""
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mx6milter.config import (RESTART_SECTIONS, SECTIONS, ConfigError, MetricsSection, describe_keys,
                              keep_restart_sections, load_config, parse_config, parse_listen)

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_a_file_body():
    config = parse_config("")
    assert config.policy.mode == "defensive"
    assert config.milter.socket == "unix:/run/mx6milter/mx6milter.sock"
    assert config.redis.url == "redis://127.0.0.1:6379/0"
    assert config.dns.nameservers == ()


def test_values_parsed():
    config = parse_config(
        "[milter]\nsocket = inet6:8891@[::1]\nmax_message_size = 512K\n"
        "[policy]\nmode = mx6  # experimental\ntrusted_networks = 2001:db8::/32, 192.0.2.0/24\n"
        "[dns]\nnameservers = 127.0.0.1:5353 [::1]:53 192.0.2.53\n")
    assert config.milter.max_message_size == 512 * 1024
    assert config.policy.mode == "mx6"
    assert [str(n) for n in config.policy.trusted_networks] == ["2001:db8::/32", "192.0.2.0/24"]
    assert config.dns.nameservers == (("127.0.0.1", 5353), ("::1", 53), ("192.0.2.53", 53))


BAD = [
    ("[policy]\nmode = strict\n", r"x\.conf:2: \[policy\] mode = 'strict': expected one of"),
    ("[policy]\n\nfrobnicate = 1\n", r"x\.conf:3: unknown key 'frobnicate' in \[policy\]"),
    ("[milter]\n[polcy]\nmode = mx6\n", r"x\.conf:2: unknown section \[polcy\]"),
    ("[milter]\nsocket = /tmp/sock\n", r"x\.conf:2: \[milter\] socket"),
    ("[policy]\ntrusted_networks = 10.0.0.1/8\n", r"x\.conf:2: .*host bits set"),
    ("[policy]\ndefensive_code = 550\n", r"starting with 4"),
    ("[policy]\nmx6_status = 4.7.1\n", r"such as 5\.7\.1"),
    ("[policy]\ndefensive_text = caf\u00e9\n", r"ASCII"),
    ("[dns]\nnameservers = ns.example.org\n", r"not an IP address|expected ADDRESS"),
    ("[dns]\ntimeout = 10\nbudget = 5\n", r"must not exceed budget"),
    ("[dns]\ntimeout = -1\n", r"positive"),
    ("[redis]\nurl = http://x\n", r"redis://"),
    ("[policy]\nmode = mx6\nmode = report\n", r"x\.conf: .*already exists"),
    ("no section header\n", r"x\.conf: .*header"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_config_names_the_line(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(text, "x.conf")


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.conf"))
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"\xff\xfe[policy]\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(binary))


def test_check_config_exit_codes(tmp_path):
    good = ROOT / "contrib" / "mx6milter.conf"
    bad = tmp_path / "bad.conf"
    bad.write_text("[policy]\nmode = strict\n")
    ok = subprocess.run([sys.executable, "-m", "mx6milter.cli", "-c", str(good), "--check-config"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run([sys.executable, "-m", "mx6milter.cli", "-c", str(bad), "--check-config"],
                          capture_output=True, text=True)
    assert fail.returncode == 2
    assert f"{bad}:2: [policy] mode" in fail.stderr
    assert "Traceback" not in fail.stderr


# The shipped file sets these differently from the built-in defaults, on purpose.
SHIPPED = {("metrics", "listen"): "127.0.0.1:9169"}   # metrics on, on loopback only


def test_contrib_config_lists_every_key_with_its_default():
    text = (ROOT / "contrib" / "mx6milter.conf").read_text()
    config = parse_config(text)
    assert config.metrics.listen == SHIPPED[("metrics", "listen")]
    # apart from SHIPPED, the shipped file changes nothing
    assert dataclasses.replace(config, metrics=MetricsSection()) == parse_config("", config.path)
    for section, key, default in describe_keys():
        value = SHIPPED.get((section, key), default)
        assert re.search(rf"^{key} = ?{re.escape(value)}$", text, re.MULTILINE), (section, key)


def man_heading(section: str, key: str, default: str) -> str:
    """A key's heading in mx6milter.conf(5): the default, or (empty) in italics; the keys
    of RESTART_SECTIONS marked (restart)."""
    shown = default.replace("-", "\\-") if default else "\\fI(empty)\\fR"
    restart = (" (restart)" if shown.endswith("\\fR") else " \\fR(restart)") \
        if section in RESTART_SECTIONS else ""
    return f".B {key} = {shown}{restart}"


def test_man_page_documents_every_key_with_its_default():
    page = (ROOT / "man" / "mx6milter.conf.5").read_text()
    for section, key, default in describe_keys():
        assert f".SH [{section}]" in page, section
        heading = man_heading(section, key, default)
        assert re.search(rf"^\.(TP|TQ)\n{re.escape(heading)}$", page, re.MULTILINE), heading
    assert page.count("(restart)") == 1 + sum(s in RESTART_SECTIONS for s, _, _ in describe_keys())


def test_a_reload_keeps_the_running_restart_sections_and_takes_the_rest():
    """The daemon's reload (and the supervisor's) runs keep_restart_sections: the sections
    the man page marks (restart) keep their running values, every other one is the new."""
    running = parse_config("[milter]\nmax_recipients = 10\n[metrics]\nlisten = 127.0.0.1:9169\n")
    new = parse_config("[milter]\nmax_recipients = 20\n[policy]\nmode = mx6\n")
    kept, waiting = keep_restart_sections(running, new)
    assert waiting == ["milter", "metrics"] and list(RESTART_SECTIONS) == waiting
    assert kept.milter.max_recipients == 10 and kept.metrics.listen == "127.0.0.1:9169"
    assert kept.policy.mode == "mx6"
    assert [name for name in SECTIONS if getattr(kept, name) != getattr(new, name)] == waiting
    assert [name for name in SECTIONS if getattr(kept, name) != getattr(running, name)] == ["policy"]
    assert keep_restart_sections(running, running) == (running, [])


def test_the_reloads_keep_restart_sections_through_config_py():
    """No reload decides on its own which sections wait for a restart."""
    daemon = (ROOT / "mx6milter" / "daemon.py").read_text()
    assert daemon.count("keep_restart_sections(self.config, ") == 2     # Daemon, Supervisor
    assert not re.search(r"\.(milter|metrics)\s*!=|replace\([^)]*(milter|metrics)=", daemon)


def check_config(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "c.conf"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "mx6milter.cli", "-c", str(path),
                           "--check-config"], capture_output=True, text=True)


def test_check_config_reads_the_secret_files(tmp_path):
    missing = tmp_path / "no-such-secret"
    result = check_config(tmp_path, f"[addressbook]\nsecret_file = {missing}\n"
                                    "[policy]\nauthserv_id = mx.example.org\n")
    assert result.returncode == 2
    assert f"[addressbook] secret_file: cannot read {missing}" in result.stderr
    short = tmp_path / "short"
    short.write_bytes(b"x" * 8)
    short.chmod(0o600)
    result = check_config(tmp_path, f"[redis]\npassword_file = {missing}\n"
                                    "[policy]\nauthserv_id = mx.example.org\n")
    assert result.returncode == 2 and "[redis] password_file: cannot read" in result.stderr
    result = check_config(tmp_path, f"[addressbook]\nsecret_file = {short}\n")
    assert result.returncode == 2 and "holds fewer than 16 bytes" in result.stderr
    good = tmp_path / "good"
    good.write_bytes(b"x" * 32)
    good.chmod(0o600)
    result = check_config(tmp_path, f"[addressbook]\nsecret_file = {good}\n"
                                    "[policy]\nauthserv_id = mx.example.org\n")
    assert (result.returncode, result.stderr) == (0, "")


def test_check_config_warns_about_the_default_authserv_id(tmp_path):
    result = check_config(tmp_path, "[policy]\nmode = report\n")
    assert result.returncode == 0 and ": OK (mode report" in result.stdout
    assert "warning:" in result.stderr and "[policy] authserv_id is left at its default " \
        "('localhost')" in result.stderr
    assert check_config(tmp_path, "[policy]\nauthserv_id = mx.example.org\n").stderr == ""


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:9169", ("127.0.0.1", 9169)), ("[::1]:9169", ("::1", 9169)),
    ("[2001:db8::1]:1", ("2001:db8::1", 1)), ("0.0.0.0:65535", ("0.0.0.0", 65535))])
def test_metrics_listen(value, expected):
    assert parse_listen(value) == expected
    assert parse_config(f"[metrics]\nlisten = {value}\n").metrics.listen == value


@pytest.mark.parametrize("value", ["localhost:9169", "[::1]", "::1:9169", "127.0.0.1:0",
                                   "127.0.0.1:65536", "300.1.1.1:80", "[fe80::1%lo]:80",
                                   "127.0.0.1:80 junk", "127.0.0.1", "1.2.3.4:\u0661\u0662"])
def test_bad_metrics_listen_names_the_key(value):
    with pytest.raises(ConfigError, match=r"c.conf:2: \[metrics\] listen"):
        parse_config(f"[metrics]\nlisten = {value}\n", "c.conf")


@given(st.text(max_size=60))
def test_parse_listen_takes_anything(text):
    try:
        host, port = parse_listen(text)
    except ValueError:
        return
    assert 0 < port < 65536 and text.endswith(f":{port}") and host in text
