"""The soak with a ledger, two minutes of it (bench/soak.py; the full run is
``python -m bench.soak``, figures in bench/RESULTS.rst).

Mixed IPv4 and IPv6 mail through a private Postfix in both documented layouts
with mx6milter (processes = 2), while Redis is killed every 10 s and hung, BIND
stalls, the milter is SIGKILLed and one worker is killed. Every message sent is
accounted for: nothing lost, nothing duplicated, nothing delivered that was
refused; IPv4 refused only while no milter process was alive (or on the worker
that was killed), and never on layout 2's IPv4 listener without the milter.
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import soak  # noqa: E402

FAULTS = ("redis-kill", "redis-restarted", "redis-hang", "dns-stall", "milter-kill",
          "milter-restarted", "worker-kill")


@pytest.mark.timeout(900)
@pytest.mark.skipif(os.geteuid() != 0, reason="adds loopback addresses, runs Postfix (root)")
def test_two_minute_soak_loses_nothing():
    # Not pytest's tmp_path: its parents are mode 0700 and Postfix runs as user postfix.
    # Kept when the test fails: OUT/soak.json, ledger.jsonl, mx6milter.log, postfix/maillog.
    out = Path(tempfile.mkdtemp(prefix="mx6-soak-"))
    summary = soak.run(out, messages=1_000_000, seconds=120, sessions=8)
    print(f"soak output in {out}")
    assert summary["sent"] == summary["delivered"] + summary["refused"] + summary["unanswered"]
    assert summary["unanswered"] == 0, summary
    assert summary["lost"] == 0, summary["lost_examples"]
    assert summary["duplicated"] == 0, summary["duplicated_examples"]
    assert summary["unexpected"] == 0, summary["unexpected_examples"]
    assert summary["ipv4_refused_otherwise"] == 0, summary["ipv4_refused_otherwise_examples"]
    assert summary["ipv4_refused_layout2"] == 0, summary["ipv4_refused_layout2_examples"]
    assert summary["fallback_accepted"] == 0, summary["fallback_accepted_examples"]
    assert summary["wrong_verdict"] == 0, summary["wrong_verdict_examples"]
    assert summary["milter_alive_at_end"]
    missing = [name for name in FAULTS if not summary["faults"].get(name)]
    assert not missing, f"faults that never happened: {missing}"
    # The mix is real: every kind got through at some point, the fallback kind never.
    kinds = summary["by_kind"]
    assert set(kinds) == {kind.name for kind in soak.KINDS}
    for name in ("ipv4", "ipv4-own-listener", "whitelisted", "greenlisted"):
        assert kinds[name]["accepted"] > 0, kinds
    assert kinds["fallback"]["refused"] > 0 and kinds["fallback"]["accepted"] == 0
    assert summary["ok"]
    shutil.rmtree(out, ignore_errors=True)
