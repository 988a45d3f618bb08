"""The soak's account (bench/soak.py): each way a message can go wrong is counted,
so the soak's zero figures mean something."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.soak import FaultLog, Sent, account  # noqa: E402

REFUSED = "4.7.1 Service unavailable - try again later"


def sent(number, kind, code, start=0.0, end=1.0, text=""):
    return Sent(f"<{number}@soak.example>", kind, start, end, code, text)


def test_a_clean_run_is_ok():
    ledger = [sent(1, "ipv4", 250), sent(2, "whitelisted", 250), sent(3, "fallback", 451),
              sent(4, "greenlisted", 451), sent(5, "ipv4-own-listener", 250)]
    arrived = {"<1@soak.example>": [""], "<2@soak.example>": ["whitelisted"],
               "<5@soak.example>": [""]}
    result = account(ledger, arrived, FaultLog())
    assert result.ok
    assert (result.sent, result.delivered, result.refused, result.unanswered) == (5, 3, 2, 0)
    assert result.by_kind["fallback"] == {"accepted": 0, "refused": 1, "unanswered": 0}


def test_lost_duplicated_and_unexpected_are_found():
    ledger = [sent(1, "ipv4", 250), sent(2, "ipv4", 250), sent(3, "whitelisted", 451)]
    arrived = {"<2@soak.example>": ["", ""], "<3@soak.example>": ["whitelisted"],
               "<9@soak.example>": [""]}
    result = account(ledger, arrived, FaultLog())
    assert result.lost == ["<1@soak.example>"]
    assert result.duplicated == ["<2@soak.example>"]
    assert result.unexpected == ["<3@soak.example>", "<9@soak.example>"]
    assert not result.ok


def test_ipv6_without_its_verdict_and_fallback_accepted_are_found():
    ledger = [sent(1, "whitelisted", 250), sent(2, "greenlisted", 250), sent(3, "fallback", 250)]
    arrived = {"<1@soak.example>": [""], "<2@soak.example>": ["whitelisted"],
               "<3@soak.example>": ["none"]}
    result = account(ledger, arrived, FaultLog())
    assert [msg_id for msg_id, _ in result.wrong_verdict] == ["<1@soak.example>", "<2@soak.example>"]
    assert result.fallback_accepted == ["<3@soak.example>"]
    assert not result.ok


def test_ipv4_refusals_are_allowed_only_while_a_milter_process_died():
    faults = FaultLog(milter_down=[(10.0, 20.0)], worker_kills=[30.0])
    ledger = [sent(1, "ipv4", 451, 9.0, 10.5, REFUSED),       # in flight when it was killed
              sent(2, "ipv4", 451, 19.0, 19.5, REFUSED),      # while none was alive
              sent(3, "ipv4", 451, 29.5, 30.5, REFUSED),      # on the worker killed
              sent(4, "ipv4", 451, 20.5, 21.0, REFUSED),      # after the restart: not allowed
              sent(5, "ipv4-own-listener", 451, 15.0, 16.0, REFUSED)]   # layout 2: never
    result = account(ledger, {}, faults)
    assert result.ipv4_refused_milter_dead == 2
    assert result.ipv4_refused_worker_killed == 1
    assert [r[0] for r in result.ipv4_refused_otherwise] == ["<4@soak.example>"]
    assert [r[0] for r in result.ipv4_refused_layout2] == ["<5@soak.example>"]
    assert not result.ok


def test_unanswered_messages_are_counted_and_balance_the_sum():
    result = account([sent(1, "whitelisted", 0, text="SMTPServerDisconnected")], {}, FaultLog())
    assert (result.sent, result.unanswered) == (1, 1)
    assert result.ok            # the sum balances; the e2e test asserts none at all
