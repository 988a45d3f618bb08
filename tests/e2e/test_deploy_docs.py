"""contrib/ for operators: README shows it line for line, and every file is checked.

The Postfix and Sendmail files are also run for real by test_postfix_e2e.py
and test_sendmail_e2e.py; here: README equality, Postfix's own parameter
check, the systemd unit (systemd-analyze verify, and the daemon started with
only the unit's capabilities), the Sendmail fragment through m4.
"""
from __future__ import annotations

import grp
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import sendmail
from milterd import MX6MILTER, MilterDaemon, merge_ini
from mx6milter.config import parse_config
from miltertest_driver import miltertest

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
SHOWN_DIRS = ("postfix", "sendmail", "systemd")
UNIT_CAPABILITIES = "CAP_CHOWN CAP_SETUID CAP_SETGID"


def readme_snippets() -> dict:
    """Every ``contrib/PATH``:: literal block in README.rst: path -> its text."""
    lines = (ROOT / "README.rst").read_text().split("\n")
    snippets = {}
    for number, line in enumerate(lines):
        m = re.fullmatch(r"``(contrib/[^`]+)``::", line)
        if not m:
            continue
        block = []
        for text in lines[number + 2:]:
            if text and not text.startswith("    "):
                break
            block.append(text[4:])
        while block and not block[-1]:
            block.pop()
        assert m.group(1) not in snippets, f"{m.group(1)} shown twice in README.rst"
        snippets[m.group(1)] = "\n".join(block)
    return snippets


def test_readme_shows_every_deployment_file_line_for_line():
    snippets = readme_snippets()
    files = sorted(str(p.relative_to(ROOT)) for d in SHOWN_DIRS for p in (CONTRIB / d).iterdir()
                   if p.is_file())
    assert sorted(snippets) == files
    for path, text in snippets.items():
        assert text.split("\n") == (ROOT / path).read_text().rstrip("\n").split("\n"), path


def test_readme_sections_follow_quick_start():
    text = (ROOT / "README.rst").read_text()
    titles = re.findall(r"^(\S.*)\n=+\n", text, re.MULTILINE)
    at = titles.index("Quick start")
    assert titles[at + 1:at + 3] == ["Deploying with Postfix", "Deploying with Sendmail"]


def test_postfix_takes_every_contrib_parameter(tmp_path):
    """postconf warns about unknown or misspelled parameters (Postfix only logs them)."""
    (tmp_path / "main.cf").write_text((CONTRIB / "postfix" / "main.cf").read_text())
    (tmp_path / "master.cf").write_text((CONTRIB / "postfix" / "master.cf").read_text())
    result = subprocess.run(["postconf", "-c", str(tmp_path), "-n"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""
    assert "milter_default_action = tempfail" in result.stdout
    services = subprocess.run(["postconf", "-c", str(tmp_path), "-M"], capture_output=True,
                              text=True)
    assert services.returncode == 0 and services.stderr == ""
    assert len([s for s in services.stdout.splitlines() if s.split()[1] == "inet"]) == 3


def test_postfix_milter_config_matches_main_cf_and_master_cf():
    config = parse_config((CONTRIB / "postfix" / "mx6milter.conf").read_text(), "postfix.conf")
    assert config.milter.socket_group == "postfix" and config.milter.socket_mode == 0o660
    main_cf = (CONTRIB / "postfix" / "main.cf").read_text()
    relative = re.search(r"^smtpd_milters = unix:(\S+)$", main_cf, re.MULTILINE).group(1)
    assert config.milter.socket == f"unix:/var/spool/postfix/{relative}"   # the chroot
    master_cf = (CONTRIB / "postfix" / "master.cf").read_text()
    mx6 = re.search(r"smtpd_milters=unix:(\S+)", master_cf.split("[2001:db8::26]")[1]).group(1)
    assert Path(mx6).parent == Path(relative).parent


def unit_text() -> str:
    return (CONTRIB / "systemd" / "mx6milter.service").read_text()


def test_systemd_unit_and_drop_in_verify(tmp_path):
    man = tmp_path / "man"
    for section in ("5", "8"):
        (man / f"man{section}").mkdir(parents=True)
        for page in (ROOT / "man").glob(f"*.{section}"):
            shutil.copy(page, man / f"man{section}")
    unit = tmp_path / "mx6milter.service"
    dropin = (CONTRIB / "systemd" / "postfix-chroot.conf").read_text()
    unit.write_text(unit_text().replace("/usr/local/bin/mx6milter", MX6MILTER) + "\n" + dropin)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
                                            "MANPATH": str(man)})
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def unit_value(key: str) -> str:
    return re.search(rf"^{key}=(.*)$", unit_text(), re.MULTILINE).group(1)


@pytest.mark.parametrize("layout", ["runtime-directory", "postfix-chroot"])
def test_the_units_capabilities_suffice_to_bind_hand_over_and_switch(layout, redis_url):
    """Started as root with only the unit's capability bounding set, as systemd would."""
    assert unit_value("CapabilityBoundingSet") == UNIT_CAPABILITIES
    assert unit_value("NoNewPrivileges") == "yes"
    top = Path(tempfile.mkdtemp(prefix="mx6-unit-"))
    top.chmod(0o755)
    try:
        socket_dir = top / "mx6milter"
        if layout == "runtime-directory":   # RuntimeDirectory=mx6milter, RuntimeDirectoryMode=0755
            socket_dir.mkdir(mode=0o755)
        else:                               # the drop-in's ExecStartPre=+/usr/bin/install ...
            install = re.search(r"^ExecStartPre=\+(.*)$", (CONTRIB / "systemd" / "postfix-chroot.conf")
                                .read_text(), re.MULTILINE).group(1)
            subprocess.run(install.replace("/var/spool/postfix/mx6milter", str(socket_dir)).split(),
                           check=True)
        caps = ",".join("+" + c[4:].lower() for c in UNIT_CAPABILITIES.split())
        wrapper = ("setpriv", f"--bounding-set=-all,{caps}", "--inh-caps=-all", "--no-new-privs", "--")
        keys = merge_ini((CONTRIB / "postfix" / "mx6milter.conf").read_text()).replace(
            "/var/spool/postfix/mx6milter", str(socket_dir)).replace("user = mx6milter", "user = nobody")
        with MilterDaemon(top, f"unix:{socket_dir}/mx6milter.sock", redis_url, extra=keys,
                          wrapper=wrapper) as milter:
            info = (socket_dir / "mx6milter.sock").stat()
            assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == \
                (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("postfix").gr_gid, 0o660)
            status = Path(f"/proc/{milter.pid}/status").read_text()
            assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE), status
            miltertest("not_judged.lua", milter.socket, CLIENT="192.0.2.10", AUTH="")
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_sendmail_fragment_builds_the_milter_and_macro_options():
    if not sendmail.available():
        pytest.fail("no Sendmail in .venv/sendmail: run scripts/install-sendmail.sh")
    server = sendmail.PrivateSendmail("/run/mx6milter/mx6milter.sock")
    try:
        cf = server.write_config().read_text()
    finally:
        server.close()
    assert "Xmx6milter, S=local:/run/mx6milter/mx6milter.sock, F=T, T=C:30s;S:30s;R:30s;E:5m" in cf
    assert "O InputMailFilters=mx6milter" in cf
    assert ("O Milter.macros.connect=j, _, {daemon_name}, {if_name}, {if_addr}, {client_addr}"
            in cf)
    assert ("O Milter.macros.envfrom=i, {auth_type}, {auth_authen}, {auth_ssf}, {auth_author}, "
            "{mail_mailer}, {mail_host}, {mail_addr}" in cf)
    assert "O Milter.macros.eom={msg_id}, i" in cf
