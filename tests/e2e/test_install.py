"""README's two install recipes, run as written: the Debian package (built by
scripts/build-deb.sh, installed on this machine, run, purged) and the virtual
environment.

The package test leaves the machine as it found it, pass or fail: it refuses
to run where mx6milter is already installed, purges what it installed, and
removes the mx6milter user and group only if it created them (Debian policy
keeps them on purge; the test checks that, then undoes it).
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from milterd import MilterDaemon
from miltertest_driver import AUTHSERV, expected_reply, miltertest
from mx6milter import __version__

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.rst").read_text()
PACKAGE = "mx6milter"
CONF = Path("/etc/mx6milter/mx6milter.conf")
ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


@pytest.fixture(scope="module", autouse=True)
def apt_waits_for_the_lock(tmp_path_factory):
    """apt-get waits for the dpkg lock (other tests on this machine may hold it) instead of
    failing at once: APT_CONFIG adds DPkg::Lock::Timeout; apt.conf.d is still read."""
    conf = tmp_path_factory.mktemp("apt") / "apt.conf"
    conf.write_text('DPkg::Lock::Timeout "600";\n')
    ENV["APT_CONFIG"] = str(conf)
    yield
    del ENV["APT_CONFIG"]


def readme_block(after: str) -> list:
    """The commands of the literal block that follows the paragraph ending in AFTER."""
    m = re.search(re.escape(after) + r"::\n\n((?:    .*\n)+)", README)
    assert m, f"README has no command block after {after!r}"
    return [line.strip() for line in m.group(1).splitlines()]


def run(command, timeout: int = 120, **kwargs) -> subprocess.CompletedProcess:
    """COMMAND in a process group of its own; a timeout or an interrupted test ends the
    whole group (SIGTERM: build-deb.sh removes its copy), never leaving builds behind."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=ENV, start_new_session=True, **kwargs)
    try:
        out, err = process.communicate(timeout=timeout)
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate()
        raise
    result = subprocess.CompletedProcess(command, process.returncode, out, err)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{out}{err}"
    return result


def dpkg(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """dpkg, waiting while another dpkg or apt on this machine holds the lock."""
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(["dpkg", *args], capture_output=True, text=True, env=ENV)
        if "lock" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(2)


def installed() -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True,
                            text=True)
    return result.returncode == 0 and "installed" in result.stdout.split()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:          # the process is gone
        return b""


def exists(database: str, name: str) -> bool:
    return subprocess.run(["getent", database, name], capture_output=True).returncode == 0


@pytest.fixture
def machine():
    """Put back what the package test changes, even when it fails."""
    if installed() or Path("/opt/venvs/mx6milter").exists():
        pytest.fail("mx6milter is already installed on this machine; this test would remove it")
    had_user, had_group = exists("passwd", PACKAGE), exists("group", PACKAGE)
    debs_before = set((ROOT / "dist").glob("*.deb"))
    try:
        yield
    finally:
        if installed() or subprocess.run(["dpkg-query", "-W", PACKAGE],
                                         capture_output=True).returncode == 0:
            dpkg("--purge", PACKAGE)
        if not had_user and exists("passwd", PACKAGE):
            subprocess.run(["deluser", "--quiet", "--system", PACKAGE], capture_output=True)
        if not had_group and exists("group", PACKAGE):
            subprocess.run(["delgroup", "--quiet", "--system", PACKAGE], capture_output=True)
        for deb in set((ROOT / "dist").glob("*.deb")) - debs_before:
            deb.unlink()


@pytest.mark.timeout(3600)      # the build compiles pymilter and fetches from PyPI
def test_the_debian_package_installs_runs_and_purges(machine, redis_url, dns_server):
    build_deps, build, install = readme_block("built by the project's own script with\ndh-virtualenv")
    run(build_deps.split(), timeout=600)          # already installed: apt-get asks nothing
    run(build.split(), cwd=ROOT, timeout=1800)
    assert install == f"apt-get install ./dist/mx6milter_{__version__}_amd64.deb"
    run(install.split(), cwd=ROOT, timeout=600)
    files = run(["dpkg", "-L", PACKAGE]).stdout.split("\n")

    # The configuration: a conffile, readable by the daemon's group only.
    assert str(CONF) in run(["dpkg-query", "-W", "-f=${Conffiles}", PACKAGE]).stdout
    info = CONF.stat()
    assert (info.st_uid, grp.getgrgid(info.st_gid).gr_name, stat.S_IMODE(info.st_mode)) == \
        (0, PACKAGE, 0o640)
    assert re.search(r"^user = mx6milter$", CONF.read_text(), re.MULTILINE)
    assert pwd.getpwnam(PACKAGE).pw_shell == "/usr/sbin/nologin"
    assert run(["mx6milter", "--check-config"]).stdout.startswith(f"{CONF}: OK")
    assert run(["mx6ctl", "--version"]).stdout == f"mx6ctl {__version__}\n"
    for page, path in (("mx6milter.conf", "man5/mx6milter.conf.5.gz"),
                       ("mx6milter", "man8/mx6milter.8.gz"), ("mx6ctl", "man1/mx6ctl.1.gz")):
        assert run(["man", "-w", page]).stdout == f"/usr/share/man/{path}\n"
    completion = run(["bash", "-c", "source /usr/share/bash-completion/completions/mx6ctl && "
                      "complete -p mx6ctl"]).stdout
    assert completion.startswith("complete ") and completion.rstrip().endswith(" mx6ctl")
    assert Path("/usr/share/zsh/vendor-completions/_mx6ctl").read_text().startswith("#compdef mx6ctl")
    unit = Path("/lib/systemd/system/mx6milter.service").read_text()
    assert "ExecStart=/usr/bin/mx6milter -c /etc/mx6milter/mx6milter.conf\n" in unit
    assert Path("/usr/share/mx6milter/systemd/postfix-chroot.conf").is_file()
    # Installed, not enabled, not started.
    assert not list(Path("/etc/systemd/system").glob("*.wants/mx6milter.service"))
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if b"/opt/venvs/mx6milter/" in _read(p)]

    # The installed daemon, as the package's user, driven by miltertest.
    top = Path(tempfile.mkdtemp(prefix="mx6-deb-"))
    top.chmod(0o755)
    try:
        with MilterDaemon(top, f"unix:{top}/m.sock", redis_url, extra="[milter]\nuser = mx6milter\n",
                          nameservers=dns_server.nameservers, executable="/usr/bin/mx6milter") as milter:
            assert milter.process.args[0] == "/usr/bin/mx6milter"
            reply = expected_reply(milter, "2001:db8:99::1")
            miltertest("ipv6_fallback.lua", milter.socket, CLIENT="2001:db8:99::1", REPLY=reply)
            run(["mx6ctl", "-c", str(milter.conf), "ip", "add", "2001:db8:6::/48"])
            verdict = (f" whitelisted; evidence=ip=pass(2001:db8:6::/48 source=local); "
                       f"mode=defensive; by={AUTHSERV}")
            miltertest("ipv6_accept.lua", milter.socket, CLIENT="2001:db8:6::10", VERDICT=verdict)
            status = Path(f"/proc/{milter.pid}/status").read_text()
            assert re.search(rf"^Uid:\s+{pwd.getpwnam(PACKAGE).pw_uid}\s", status, re.MULTILINE)
    finally:
        shutil.rmtree(top, ignore_errors=True)

    # Purge: nothing of the package is left but the user and group (Debian policy).
    result = dpkg("--purge", PACKAGE)
    assert result.returncode == 0, result.stderr
    assert not installed()
    left = [f for f in files if f.startswith("/") and os.path.lexists(f) and not os.path.isdir(f)]
    assert left == []
    for path in ("/opt/venvs/mx6milter", "/etc/mx6milter", "/usr/share/mx6milter"):
        assert not os.path.lexists(path), path
    assert exists("passwd", PACKAGE) and exists("group", PACKAGE)


@pytest.mark.timeout(1800)
def test_the_virtual_environment_recipe(tmp_path):
    commands = readme_block("**A virtual environment**, for other systems or for a quick try")
    venv = tmp_path / "mx6milter"
    assert commands[0].startswith("apt-get install ")
    run(commands[0].split(), timeout=600)
    for command in commands[1:]:
        words = command.replace("/opt/mx6milter", str(venv)).replace(
            "/path/to/this/checkout", str(ROOT)).split()
        run(words, timeout=900)
    assert run([str(venv / "bin" / "mx6ctl"), "--version"]).stdout == f"mx6ctl {__version__}\n"
    assert run(["man", "-M", str(venv / "share" / "man"), "-w", "mx6milter.conf"]).stdout == \
        f"{venv}/share/man/man5/mx6milter.conf.5\n"
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "mx6milter").is_dir() and not (site / "bench").exists()
    dist_info = next(site.glob("mx6milter-*.dist-info"))
    assert "MIT License" in next(dist_info.rglob("LICENSE")).read_text()
