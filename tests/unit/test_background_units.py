"""The background queue behind the history, learning, RDAP and the journal: a
bounded queue, batches, and after a Redis failure a pause without a timeout per
item, logged once a minute. The clock of the pause is moved by hand."""
import logging

import pytest

from mx6milter.evidence.background import LOG_EVERY, REDIS_PAUSE, BackgroundQueue
from mx6milter.journal import Journal
from mx6milter.store import StoreUnavailable


class Clock:
    def __init__(self):
        self.now = 5.0            # as time.monotonic() shortly after boot

    def __call__(self):
        return self.now


class Recorder(BackgroundQueue):
    """Handles items by remembering them; raises what ``fail`` holds for the next batch."""
    what = "test queue"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.handled: list = []
        self.discarded: list = []
        self.fail: Exception | None = None
        self.clock = self.monotonic = Clock()

    def handle(self, items):
        if self.fail is not None:
            err, self.fail = self.fail, None
            raise err
        self.handled.append(list(items))

    def discard(self, items):
        self.discarded.append(list(items))

    def put(self, item, cost=1):
        queued = self.submit(item, cost)
        assert self.flush(10)
        return queued


def test_a_full_queue_drops_and_counts_and_logs_once_a_minute(caplog):
    queue = Recorder(max_cost=3)
    with queue._cond:                 # the worker cannot take anything meanwhile
        queue._worker = "held"       # and none is started
        assert [queue.submit(n, cost=2) for n in (1, 2, 3)] == [True, False, False]
        queue.monotonic.now += LOG_EVERY + 1
        assert queue.submit(4, cost=2) is False
        assert queue.submit(5, cost=1) is True
    assert queue.dropped == 3 and queue.pending() == 2
    lines = [r.getMessage() for r in caplog.records if r.name == __name__]
    assert lines == ["test queue: queue full, 1 items dropped so far",
                     "test queue: queue full, 3 items dropped so far"]


def test_batches_are_at_most_batch_size_and_all_handled():
    queue = Recorder(max_cost=100, batch_size=3)
    with queue._cond:
        for n in range(7):
            queue._queue.append((n, 1))
            queue._cost += 1
        queue._worker = None
    assert queue.put(7)
    assert [len(batch) for batch in queue.handled] == [3, 3, 2]
    assert [n for batch in queue.handled for n in batch] == list(range(8)) and queue._cost == 0


def test_after_a_redis_failure_redis_is_left_alone_for_a_pause(caplog):
    queue = Recorder(max_cost=100)
    queue.fail = StoreUnavailable("connection refused")
    assert queue.put("a")
    assert queue.failed == 1 and queue.handled == [] and queue.discarded == []
    # within the pause: counted failed and given back, not handled (no timeout each)
    queue.monotonic.now += REDIS_PAUSE / 2
    assert queue.put("b")
    assert queue.failed == 2 and queue.handled == [] and queue.discarded == [["b"]]
    # after it: Redis is asked again
    queue.monotonic.now += REDIS_PAUSE
    assert queue.put("c")
    assert queue.failed == 2 and queue.handled == [["c"]]
    # a second failure within the minute is counted, not logged; after the minute it is
    queue.fail = StoreUnavailable("timeout")
    assert queue.put("d")
    queue.monotonic.now += LOG_EVERY
    queue.fail = StoreUnavailable("timeout")
    assert queue.put("e")
    assert queue.failed == 4
    warnings = [r for r in caplog.records if r.name == __name__]
    assert [r.getMessage() for r in warnings] == [
        "test queue: Redis: connection refused (1 items failed so far)",
        "test queue: Redis: timeout (4 items failed so far)"]
    assert {r.levelno for r in warnings} == {logging.WARNING}


def test_a_bug_in_handle_is_logged_counted_and_the_thread_goes_on(caplog):
    queue = Recorder(max_cost=100, batch_size=2)
    queue.fail = KeyError("bug")
    assert queue.put("a")
    assert queue.put("b")
    assert queue.failed == 1 and queue.handled == [["b"]] and queue.discarded == []
    bug = next(r for r in caplog.records if r.name == __name__)
    assert bug.getMessage() == "test queue: 1 items failed" and bug.exc_info is not None


def test_the_worker_ends_when_idle_and_starts_again_on_demand():
    queue = Recorder(max_cost=100, idle_seconds=0.01)
    assert queue.put(1)
    worker = queue._worker
    if worker is not None:
        worker.join(10)
    assert queue._worker is None
    assert queue.put(2) and queue.handled == [[1], [2]]


class Section:
    queue_size = 2


@pytest.mark.parametrize("error, expected", [
    (StoreUnavailable("connection refused"),
     "journal: Redis: connection refused; 1 records not written so far "
     "(mx6ctl report undercounts)"),
    (KeyError("bug"), "BUG in the journal (record not written)")])
def test_the_journal_keeps_its_words_and_its_logger(caplog, error, expected):
    def write(*_):
        raise error
    journal = Journal(store=None, section=Section())
    journal.monotonic = Clock()
    assert journal.submit((write, ())) and journal.flush(10)
    assert journal.failed == 1 and journal.written == 0
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("mx6milter.journal", expected)]


def test_the_journal_says_a_full_queue_in_its_words(caplog):
    journal = Journal(store=None, section=Section())
    journal.monotonic = Clock()
    with journal._cond:
        journal._worker = "held"      # nothing written meanwhile
        assert [journal.submit((print, ())) for _ in range(3)] == [True, True, False]
    assert journal.dropped == 1
    assert [(r.name, r.getMessage()) for r in caplog.records] == [(
        "mx6milter.journal",
        "journal: queue full, 1 records not written so far (mx6ctl report undercounts)")]
