"""Real senders against our fallback replies: part of the sender matrix (bench/senders.py).

Postfix's smtp client and Exim 4 send to layout (b) (an IPv6-only MX at 10,
the IPv4-only one at 20) and (e) (the MX6 layout: SRV for aware senders, an
A-only MX for the rest), and ``mx6ctl send`` as an MX6-aware sender to (e).
What each does is asserted exactly: one refused IPv6 connection with
``451 4.7.26`` and then IPv4 in the same delivery attempt, or the 550 5.5.7 of
mx6 mode and then IPv4, never a bounce. A 5xx where the 4xx belongs, a lost
enhanced code or a sender that has to wait for its retry shows here.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench.senders import R4   # the IPv4 MX's address

ROOT = Path(__file__).resolve().parents[2]
EXIM = ROOT / ".venv" / "senders" / "usr" / "sbin" / "exim4"
RETRY = 30     # the senders' retry interval: every cell here must arrive well before it

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace, ports 25 and 53 (root)"),
]


@pytest.fixture(scope="module")
def matrix():
    assert EXIM.exists(), "scripts/install.sh (install-senders.sh) should have unpacked Exim"
    out = Path(tempfile.mkdtemp(prefix="mx6-sender-matrix-"))
    try:
        cells = []
        for senders, layouts in (("postfix,exim", "b,e"), ("mx6ctl-aware", "e")):
            result = subprocess.run(
                [sys.executable, "-m", "bench.senders", "--senders", senders, "--layouts", layouts,
                 "--retry", str(RETRY), "--json", str(out / "matrix.json")],
                cwd=ROOT, capture_output=True, text=True, timeout=200)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            cells += json.loads((out / "matrix.json").read_text())["cells"]
        yield {(cell["sender"], cell["layout"]): cell for cell in cells}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def sender_text(cell) -> str:
    return "\n".join(cell["sender_log"])


@pytest.mark.parametrize("sender", ["postfix", "exim"])
def test_ipv6_mx_first_falls_back_to_the_ipv4_mx_at_once(matrix, sender):
    cell = matrix[(sender, "b")]
    assert cell["arrived"] and not cell["bounced"], cell
    assert (cell["family"], cell["listener"]) == (4, "r4")
    # One refused IPv6 connection, then the IPv4 MX, and no deferral in between (Postfix
    # logs status=deferred, Exim " == " for a delivery put off to a retry): one attempt.
    assert cell["connections"] == {"r6a": 1, "r4": 1}
    # What the defensive milter answered: a temporary failure with the reason's enhanced code.
    assert len(cell["replies"]) == 1
    assert cell["replies"][0].startswith("reject 4.7.26 Not accepted over IPv6 from this sender"), cell
    # And what the sender saw: the 451 with its code on both lines, then the IPv4 MX's 250.
    log = sender_text(cell)
    assert "[2001:db8:16::25]" in log
    assert "451-4.7.26 Not accepted over IPv6" in log and "451 4.7.26 Authentication-Results:" in log
    assert "550" not in log and "bounced" not in log and "**" not in log
    assert "status=deferred" not in log and " == " not in log
    assert f"[{R4}]" in log and "250 2.0.0 Ok" in log


@pytest.mark.parametrize("sender", ["postfix", "exim"])
def test_unaware_sender_uses_the_a_only_mx_of_the_mx6_layout(matrix, sender):
    cell = matrix[(sender, "e")]
    assert cell["arrived"] and (cell["family"], cell["listener"]) == (4, "r4"), cell
    assert cell["connections"] == {"r4": 1}     # the SRV target is not an MX: never tried
    assert cell["replies"] == []


def test_aware_sender_falls_back_to_ipv4_after_the_mx6_550(matrix):
    cell = matrix[("mx6ctl-aware", "e")]
    assert cell["arrived"] and not cell["bounced"], cell
    assert (cell["family"], cell["listener"]) == (4, "r4")
    assert list(cell["connections"]) == ["r6m", "r4"]
    assert len(cell["replies"]) == 1 and cell["replies"][0].startswith("reject 5.5.7 "), cell
    assert "550" in sender_text(cell)
