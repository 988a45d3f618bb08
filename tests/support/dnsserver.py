"""A real authoritative DNS server for the tests: BIND's named on loopback.

Zone files are rendered from ``tests/data/zones/*.zone`` templates
(``string.Template`` placeholders such as ``$DKIM_RSA`` are filled from the
values given, e.g. test-generated DKIM public keys) plus any extra zones the
caller passes. Every query is logged, so tests can count lookups.
"""
from __future__ import annotations

import re
import shutil
import string
import subprocess
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

from servers import free_port, stop_process, wait_for

ZONE_TEMPLATES = Path(__file__).resolve().parents[1] / "data" / "zones"
QUERY_LINE = re.compile(r"query: (\S+) IN (\S+) ")


def _named_binary() -> str:
    return shutil.which("named") or "/usr/sbin/named"


class DnsServer:
    def __init__(self, values: dict | None = None, extra_zones: dict | None = None,
                 template_dir: Path = ZONE_TEMPLATES):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mx6-dns-"))
        self.values = values or {}
        self.extra_zones = extra_zones or {}
        self.template_dir = template_dir
        self.process = None
        self.zones = {}

    @property
    def nameservers(self) -> str:
        """The value for [dns] nameservers."""
        return f"127.0.0.1:{self.port}"

    def _render_zones(self) -> None:
        for path in sorted(self.template_dir.glob("*.zone")):
            text = string.Template(path.read_text()).safe_substitute(self.values)
            self.zones[path.stem] = text
        self.zones.update(self.extra_zones)
        for origin, text in self.zones.items():
            (self.dir / f"{origin}.zone").write_text(text)

    def _write_config(self) -> None:
        zone_blocks = "".join(
            f'zone "{origin}" {{ type primary; file "{self.dir}/{origin}.zone"; }};\n'
            for origin in self.zones)
        (self.dir / "named.conf").write_text(f"""
options {{
    directory "{self.dir}";
    pid-file "{self.dir}/named.pid";
    session-keyfile "{self.dir}/session.key";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 port {self.port} {{ ::1; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-query {{ any; }};
    querylog yes;
    minimal-responses no;
}};
logging {{
    channel queries {{ file "{self.dir}/query.log"; print-time no; }};
    channel everything {{ file "{self.dir}/named.log"; severity info; print-time yes; }};
    category queries {{ queries; }};
    category default {{ everything; }};
}};
{zone_blocks}""")

    def start(self) -> DnsServer:
        self._render_zones()
        self._write_config()
        check = subprocess.run(["named-checkconf", "-z", str(self.dir / "named.conf")],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"zone or config error:\n{check.stdout}{check.stderr}")
        self.process = subprocess.Popen(
            [_named_binary(), "-f", "-c", str(self.dir / "named.conf"), "-n", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self._answers, timeout=20, what=f"named on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError("named exited: " + self.process.stderr.read().decode(errors="replace")
                               + (self.dir / "named.log").read_text(errors="replace")
                               if (self.dir / "named.log").exists() else "")
        origin = next(iter(self.zones), ".")
        try:
            query = dns.message.make_query(origin, dns.rdatatype.SOA)
            dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.5)
            return True
        except Exception:
            return False

    def queries(self) -> list:
        """(name, type) of every query received so far, in order."""
        time.sleep(0.05)   # named writes the log line just after answering
        path = self.dir / "query.log"
        if not path.exists():
            return []
        return [(m.group(1).lower().rstrip("."), m.group(2))
                for m in QUERY_LINE.finditer(path.read_text(errors="replace"))]

    def query_count(self) -> int:
        return len(self.queries())

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
