"""The content-filter hand-off: contrib/rspamd run in a real rspamd (the SpamAssassin
rules, read only: unit/test_greenlist_contrib_units.py).

rspamd is started on loopback with Debian's stock configuration plus the
contrib files as its local.d, and two stand-in rules: TEST_BULK in a bulk
spam group and TEST_MALWARE in the "antivirus" group (what ClamAV would add).
"""
import json
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from servers import free_port, wait_for
from verdicts import verdict

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
# Hyperscan's compiled TLD and regexp caches: 13 s to build, kept between runs.
HS_CACHE = Path(tempfile.gettempdir()) / "mx6milter-test-rspamd-hs"

STAND_INS = """
rspamd_config.TEST_BULK = {
  callback = function(task)
    return tostring(task:get_content()):find("cheap-test-pills", 1, true) ~= nil
  end,
  score = 10.0, group = "test_bulk", description = "stands for a bulk spam rule",
}
rspamd_config.TEST_MALWARE = {
  callback = function(task)
    return tostring(task:get_content()):find("test-malware-marker", 1, true) ~= nil
  end,
  score = 20.0, group = "antivirus", description = "stands for a virus scanner",
}
"""


def message(verdict_value: str | None) -> bytes:
    head = f"X-MX6-Verdict: {verdict_value}\r\n" if verdict_value else ""
    return (head + "From: Sender <sender@example.net>\r\nTo: user@example.org\r\n"
            "Subject: offer\r\nMessage-ID: <1@example.net>\r\n"
            "Date: Sun, 22 Nov 2026 18:00:00 +0000\r\n\r\n"
            "cheap-test-pills and test-malware-marker\r\n").encode()


class Rspamd:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="mx6-rspamd-"))
        self.port = free_port()
        self.process = None

    def start(self) -> "Rspamd":
        local = self.dir / "local.d"
        override = self.dir / "override.d"
        for path in (local, override, self.dir / "db", self.dir / "run", HS_CACHE):
            path.mkdir(parents=True, exist_ok=True)
        for path in (CONTRIB / "rspamd").iterdir():
            shutil.copy(path, local / path.name)
        (override / "worker-normal.inc").write_text(f'bind_socket = "127.0.0.1:{self.port}";\ncount = 1;\n')
        (override / "worker-controller.inc").write_text(f'bind_socket = "127.0.0.1:{free_port()}";\n')
        (override / "worker-proxy.inc").write_text(f'bind_socket = "127.0.0.1:{free_port()}";\n')
        (override / "logging.inc").write_text(
            f'type = "file";\nfilename = "{self.dir}/rspamd.log";\nlevel = "info";\n')
        # No DNS from the tests; the hyperscan cache survives the run.
        (local / "options.inc").write_text(
            'dns { nameserver = ["127.0.0.1:1"]; timeout = 0.5s; retransmits = 1; }\n'
            f'hs_cache_dir = "{HS_CACHE}/";\n')
        (self.dir / "rspamd.local.lua").write_text(STAND_INS)
        binary = shutil.which("rspamd") or "/usr/bin/rspamd"
        self.process = subprocess.Popen(
            [binary, "-f", "-i", "-u", "root", "-g", "root", "-c", "/etc/rspamd/rspamd.conf",
             "--var", f"LOCAL_CONFDIR={self.dir}", "--var", f"DBDIR={self.dir}/db",
             "--var", f"RUNDIR={self.dir}/run", "--var", f"LOGDIR={self.dir}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(self._answers, timeout=90, what=f"rspamd on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            log = self.dir / "rspamd.log"
            raise RuntimeError("rspamd exited: " + (log.read_text()[-3000:] if log.exists() else ""))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1) as reply:
                return reply.read().strip() == b"pong"
        except OSError:
            return False

    def symbols(self, raw: bytes) -> set:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/checkv2", data=raw,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30) as reply:
            return set(json.load(reply)["symbols"])

    def close(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def rspamd():
    server = Rspamd()
    try:
        yield server.start()
    finally:
        server.close()


def test_rspamd_whitelisted_skips_bulk_rules_keeps_malware(rspamd):
    found = rspamd.symbols(message(verdict("whitelisted")))
    assert {"MX6_WHITELISTED", "TEST_MALWARE"} <= found
    assert "TEST_BULK" not in found
    assert "MX6_GREENLISTED" not in found


def test_rspamd_greenlisted_scored_as_usual(rspamd):
    found = rspamd.symbols(message(verdict("greenlisted")))
    assert {"MX6_GREENLISTED", "TEST_BULK", "TEST_MALWARE"} <= found
    assert "MX6_WHITELISTED" not in found


def test_rspamd_without_verdict_scored_as_usual(rspamd):
    found = rspamd.symbols(message(None))
    assert {"TEST_BULK", "TEST_MALWARE"} <= found
    assert not found & {"MX6_WHITELISTED", "MX6_GREENLISTED"}


def test_rspamd_report_mode_fallback_is_not_whitelisted(rspamd):
    value = verdict("none", mode="report")
    assert value.startswith("none;")
    found = rspamd.symbols(message(value))
    assert "TEST_BULK" in found
    assert not found & {"MX6_WHITELISTED", "MX6_GREENLISTED"}
