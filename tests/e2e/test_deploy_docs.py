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
from miltertest_driver import miltertest

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
UNIT_CAPABILITIES = "CAP_CHOWN CAP_SETUID CAP_SETGID"


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
            miltertest("not_judged.lua", milter.socket, CLIENT="192.0.2.10", AUTH="", READ_BODY="yes")
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
