"""The benchmark harness on a tiny load, so it cannot rot unnoticed.

Runs ``python -m bench --plan tiny`` end to end: every server and milter it
starts, every table it prints. The figures are meaningless at this size;
what is checked is that each part ran and counted what it claims to count.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("postfix", "smtp-source", "opendkim", "opendmarc", "named", "redis-server", "unshare")


@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0, reason="the benchmark adds loopback addresses (root)")
def test_tiny_benchmark_runs_every_part():
    # Not pytest's tmp_path: its parents are mode 0700 and Postfix runs as user postfix.
    out = Path(tempfile.mkdtemp(prefix="mx6-bench-smoke-"))
    try:
        run_tiny(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_tiny(tmp_path):
    missing = [b for b in NEEDED if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
    assert not missing, f"scripts/install.sh should have installed {missing}"
    result = subprocess.run([sys.executable, "-m", "bench", "--plan", "tiny", "--out",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    decision = results["decision"]
    assert {kind: d["tier"] for kind, d in decision.items()} == \
        {"ip": "whitelisted", "addrbook": "whitelisted", "unknown": "none"}
    assert all(d["warm_cpu_ms"] > 0 and d["redis_commands"] > 0 for d in decision.values())
    configs = {s["config"] for s in results["mta_samples"]}
    assert configs == {"none", "null-unix", "null-tcp", "null-tcp-nagle", "mx6-unix", "mx6-unix-2p",
                       "mx6-tcp", "mx6-tcp-nagle", "opendkim+opendmarc"}
    assert all(s["messages"] > 0 and s["seconds"] > 0 for s in results["mta_samples"])
    rows = results["milter_rows"]
    assert {(r["cache"], r["sessions"]) for r in rows} >= {("cold", 1), ("cold", 16),
                                                           ("warm", 1), ("warm", 16)}
    assert any(r["cache"].startswith("warm, paced") and r["sessions"] == 16 for r in rows)
    assert all(r["errors"] == 0 for r in rows)
    warm = next(r for r in rows if r["cache"] == "warm" and r["sessions"] == 1)
    # The mix reached the daemon and got the verdicts it was built for.
    assert warm["actions"].get("ip:accept") and warm["actions"].get("unknown:tempfail")
    costs = results["costs"]
    assert costs["ip"]["redis_round_trips"] >= 1 and costs["ipv4"]["redis_round_trips"] == 0
    assert costs["ip"]["dns_first"] > 0
    assert len(results["rss_points"]) > 2 and results["redis_memory"]["ip_bytes"] > 0
    ab = results["metrics_ab"]
    assert len(ab["rates"]["on"]) == len(ab["rates"]["off"]) == 3 and ab["ratio"] > 0
    report = (tmp_path / "report.rst").read_text()
    assert "Goals (each measured in this run)" in report and "MTA level" in report
    assert "[metrics] on >= 0.95x off" in report
    assert "Warm decision in process" in report and "warm decision CPU <= 0.6 ms" in report
    for picture in ("throughput.svg", "rss.svg"):     # drawn by bench.plot at the end
        assert (tmp_path / picture).read_text().lstrip().startswith("<?xml"), picture
