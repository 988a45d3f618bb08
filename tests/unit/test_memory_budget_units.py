"""The memory budget ([milter] max_buffered_bytes), pure parts: the accountant, the
MessageBuilder over budget, and the sliced DKIM relaxed body canonicalisation."""
import random
import threading
import tracemalloc

from dkim import canonicalization
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mx6milter.evidence import dkimcanon
from mx6milter.membudget import JUDGING_COPIES, MemoryBudget
from mx6milter.model import MessageBuilder

# --- the accountant -------------------------------------------------------------------


def test_reserve_within_the_limit_and_release():
    budget = MemoryBudget(1000)
    first, second = budget.reservation(), budget.reservation()
    assert first.grow(600) and budget.held == 600
    assert not second.grow(500)                # would pass the limit: nothing reserved
    assert budget.held == 600 and second.size == 0 and budget.refused == 1
    assert second.grow(400) and budget.held == 1000
    first.release()
    assert budget.held == 400 and first.size == 0
    second.release()
    assert budget.held == 0


def test_release_twice_and_grow_after_release_change_nothing():
    budget = MemoryBudget(1000)
    reservation = budget.reservation()
    reservation.grow(300)
    reservation.release()
    reservation.release()
    assert budget.held == 0
    assert not reservation.grow(10)            # a released reservation holds nothing more
    assert not reservation.ensure(10)
    assert budget.held == 0


def test_ensure_and_shrink():
    budget = MemoryBudget(1000)
    reservation = budget.reservation()
    reservation.grow(100)
    assert reservation.ensure(500) and budget.held == 500
    assert reservation.ensure(200) and budget.held == 500      # already holds more
    assert not reservation.ensure(1001) and budget.held == 500  # unchanged when refused
    reservation.shrink_to(150)
    assert budget.held == 150 and reservation.size == 150
    reservation.shrink_to(400)                                  # never grows
    assert budget.held == 150
    reservation.release()
    assert budget.held == 0


def test_threads_never_pass_the_limit_and_end_at_zero():
    budget = MemoryBudget(10_000)
    seen = []
    errors = []

    def worker(seed):
        rng = random.Random(seed)
        try:
            for _ in range(2000):
                reservation = budget.reservation()
                for _ in range(rng.randint(1, 4)):
                    reservation.grow(rng.randint(1, 3000))
                    seen.append(budget.held)
                if rng.random() < 0.5:
                    reservation.ensure(rng.randint(1, 6000))
                reservation.shrink_to(rng.randint(0, 2000))
                reservation.release()
                if rng.random() < 0.2:
                    reservation.release()                      # a second release: no effect
        except Exception as err:   # reported below, in the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert budget.held == 0
    assert seen and max(seen) <= budget.limit and min(seen) >= 0
    assert budget.refused > 0                       # the limit was reached, and held


# --- the builder ----------------------------------------------------------------------


def test_builder_reserves_as_it_goes_and_builds_once():
    budget = MemoryBudget(1 << 20)
    builder = MessageBuilder(1 << 20, budget.reservation())
    builder.add_header("Subject", b" hello")
    builder.add_body(b"x" * 1000)
    assert budget.held >= 1000
    message = builder.build(JUDGING_COPIES)
    assert message.raw == b"Subject: hello\r\n\r\n" + b"x" * 1000
    assert budget.held == JUDGING_COPIES * len(message.raw)
    assert builder.body_chunks == [] and builder.raw_headers == []   # the parts are dropped
    builder.release()
    assert budget.held == 0


def test_builder_over_budget_keeps_nothing_and_gives_back():
    budget = MemoryBudget(5000)
    builder = MessageBuilder(1 << 20, budget.reservation())
    builder.add_header("Subject", b" hello")
    builder.add_body(b"x" * 4000)
    builder.add_body(b"x" * 4000)               # does not fit
    assert builder.over_budget and builder.body_chunks == [] and budget.held == 0
    builder.add_body(b"x" * 10)                 # nothing more is kept
    assert budget.held == 0
    message = builder.build(JUDGING_COPIES)
    assert message.over_budget and message.raw == b""


def test_builder_over_budget_at_build():
    budget = MemoryBudget(10_000)
    builder = MessageBuilder(1 << 20, budget.reservation())
    builder.add_body(b"x" * 3000)               # fits; 5 copies of it do not
    message = builder.build(JUDGING_COPIES)
    assert message.over_budget and budget.held == 0


def test_builder_for_the_queue_keeps_one_copy():
    budget = MemoryBudget(1 << 20)
    builder = MessageBuilder(1 << 20, budget.reservation())
    builder.add_body(b"x" * 1000)
    message = builder.build(2, keep=1)
    assert budget.held == len(message.raw)
    reservation = builder.detach()
    builder.release()                           # detached: the builder gives nothing back
    assert budget.held == len(message.raw)
    reservation.release()
    assert budget.held == 0


# --- DKIM relaxed body canonicalisation, sliced ----------------------------------------

# Bodies made of the characters the two patterns care about, in runs.
BODY_PIECES = st.sampled_from([b" ", b"\t", b"\r\n", b"\r", b"\n", b"a", b"b", b"  \r\n",
                               b"\r\n\r\n", b"\t \r\n"])


@settings(max_examples=2000)
@given(st.lists(BODY_PIECES, max_size=300).map(b"".join), st.integers(1, 40))
@example(b"", 7)
@example(b"\r\n\r\n", 1)
@example(b"\t\r\n  ", 1)
@example(b"a \t b \r\n\r\n\r\n", 3)
@example(b"a  b\r\nc \r\n", 40)          # no tab: each substitution only where it is needed
@example(b"a b\r\nc d\r\n", 40)
def test_sliced_relaxed_body_is_dkimpys(body, slice_size):
    saved = dkimcanon.SLICE
    dkimcanon.SLICE = slice_size          # many slices, cut everywhere
    try:
        assert dkimcanon.relaxed_body(body) == dkimcanon.DKIMPY_RELAXED_BODY(body)
    finally:
        dkimcanon.SLICE = saved


def test_prose_with_lone_spaces_is_not_substituted():
    # Nothing in it changes: the slice itself comes back, no copy made.
    piece = b"The quick brown fox\r\njumps over the lazy dog.\r\n"
    assert dkimcanon._canonical_slice(piece) is piece
    assert dkimcanon._canonical_slice(b"a  b \r\n") == b"a b\r\n"


def test_install_replaces_dkimpys_relaxed_body_only():
    original = canonicalization.Relaxed.canonicalize_body
    try:
        canonicalization.Relaxed.canonicalize_body = staticmethod(dkimcanon.DKIMPY_RELAXED_BODY)
        assert not dkimcanon.installed()
        dkimcanon.install()
        dkimcanon.install()                   # idempotent
        assert dkimcanon.installed()
        policy = canonicalization.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        body = b"a  b \t\r\n\r\n"
        assert policy.canonicalize_body(body) == b"a b\r\n"
        simple = canonicalization.CanonicalizationPolicy.from_c_value(b"simple/simple")
        assert simple.canonicalize_body(body) == b"a  b \t\r\n"   # simple: untouched
    finally:
        canonicalization.Relaxed.canonicalize_body = staticmethod(original)


def test_sliced_relaxed_body_peak_is_small():
    body = b"a b c d e f g h i j k l m n o p q r s t u v w x y z\r\n" * 40_000   # 2.1 MB
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    dkimcanon.relaxed_body(body)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert peak < 4 * len(body)      # dkimpy's own: about 34 times for such a body
