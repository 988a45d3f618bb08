"""One bound on the bytes a process holds for messages being judged or learnt.

Every message the milter keeps (an IPv6 message it judges, an IPv4 message it
reads for the greenlist's history) takes a ``Reservation`` from the process's
``MemoryBudget`` ([milter] max_buffered_bytes): it grows as header fields and
body chunks arrive, and is released once when the message is done with, on
every path (end of message, abort, RSET, close, an exception). A reservation
that cannot grow is refused, never waited for: the caller stops keeping the
message (an IPv6 message then falls back with reason ``memory-budget``; an
IPv4 message is accepted as always, only not learnt).

Pure: no I/O, no clock; a lock, because libmilter runs callbacks in many threads.
"""
from __future__ import annotations

import threading

# What judging a message holds at its peak, as a multiple of its size, measured
# with tracemalloc on a 25 MB message with a relaxed/relaxed DKIM signature
# (python -m bench.memory --large): the raw bytes the milter built (1), plus
# dkimpy's working copies while it verifies (3.6: its parser splits the whole
# message into lines, then joins the body again; relaxed canonicalisation,
# sliced by evidence/dkimcanon.py, holds about 3 copies of the body later, when
# the lines are gone). Rounded up: 4.6 -> 5. Since then dkimcanon.py also parses
# for dkimpy, keeping the body as one slice instead of its lines, so the peak can
# only be lower; 5 is kept until it is measured again. Reserved at end of message, before
# the message is built, for as long as it is judged; while the message arrives
# it holds only its own bytes (1 copy), which is what a slow sender ties up.
# A small message costs a fixed amount more (a slice of canonicalisation, 64 KB
# times at most about 35), not counted: the budget is about large messages.
JUDGING_COPIES = 5

# The failure reason of an IPv6 message not kept because the budget was spent.
REASON = "memory-budget"


class MemoryBudget:
    """At most ``limit`` bytes reserved at once, over all reservations."""

    def __init__(self, limit: int):
        self.limit = limit
        self._held = 0
        self._lock = threading.Lock()
        self.refused = 0          # reservations that could not grow

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    def reservation(self) -> Reservation:
        return Reservation(self)

    def _take(self, amount: int) -> bool:
        with self._lock:
            if self._held + amount > self.limit:
                self.refused += 1
                return False
            self._held += amount
            return True

    def _give(self, amount: int) -> None:
        with self._lock:
            self._held -= amount
            if self._held < 0:        # a bug in the accounting: never below zero
                self._held = 0
                raise AssertionError("memory budget released more than it held")


class Reservation:
    """The bytes one message holds: grown as it arrives, released once.

    Used by one thread at a time (a connection's callbacks, then maybe the
    history's worker), but locked anyway so that a release racing a grow can
    never count twice. After ``release`` it holds nothing and grows no more.
    """

    def __init__(self, budget: MemoryBudget):
        self.budget = budget
        self.size = 0
        self.released = False
        self._lock = threading.Lock()

    def grow(self, amount: int) -> bool:
        """Reserve AMOUNT more bytes; False (nothing reserved) if the budget is spent."""
        with self._lock:
            return self._hold(self.size + amount)

    def ensure(self, total: int) -> bool:
        """Hold at least TOTAL bytes; False (the size unchanged) if the budget is spent."""
        with self._lock:
            return self._hold(total)

    def _hold(self, total: int) -> bool:
        # With the lock held: at least TOTAL, or nothing changed.
        extra = total - self.size
        if self.released:
            return False
        if extra <= 0:
            return True
        if not self.budget._take(extra):
            return False
        self.size = total
        return True

    def shrink_to(self, total: int) -> None:
        """Hold at most TOTAL bytes, giving the rest back."""
        with self._lock:
            extra = self.size - max(0, total)
            if extra > 0:
                self.size -= extra
                self.budget._give(extra)

    def release(self) -> None:
        """Give every byte back; a second call does nothing."""
        with self._lock:
            if self.released:
                return
            self.released = True
            amount, self.size = self.size, 0
            if amount:
                self.budget._give(amount)
