"""A real rspamd on loopback: Debian's stock configuration plus contrib/rspamd as its
local.d, two stand-in rules (TEST_BULK in a bulk spam group, TEST_MALWARE in the
"antivirus" group, what ClamAV would add), its HTTP scanner on ``port`` and its milter
proxy (scanning itself) on ``proxy_port``. No DNS: every lookup of its fails at once."""
import json
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from servers import free_port, stop_process, wait_for

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


class Rspamd:
    def __init__(self, milter_headers: str = 'use = ["authentication-results"];\n'):
        self.milter_headers = milter_headers        # local.d/milter_headers.conf
        self.dir = Path(tempfile.mkdtemp(prefix="mx6-rspamd-"))
        self.port = free_port()
        self.proxy_port = free_port()
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
        (override / "worker-proxy.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.proxy_port}";\nmilter = yes;\n'
            'upstream "local" { default = yes; self_scan = yes; }\n')
        # Authentication-Results by the milter proxy, as an MX that has rspamd add them
        (local / "milter_headers.conf").write_text(self.milter_headers)
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
        stop_process(self.process, timeout=15)
        shutil.rmtree(self.dir, ignore_errors=True)
