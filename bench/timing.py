"""The measuring loop of the in-process micro-benchmarks (bench_dnswl, bench_rdap): one
call timed again and again; each benchmark sums the durations up in its own terms."""
from __future__ import annotations

import time


def durations_ms(call, count: int, clock=time.perf_counter, warmup: int = 0,
                 each=None) -> list:
    """COUNT durations of CALL() in milliseconds, on CLOCK (perf_counter: wall time;
    process_time: this process's CPU), after WARMUP calls not timed. EACH, if given, is
    handed every timed call's result, outside the timing."""
    for _ in range(warmup):
        call()
    durations = []
    for _ in range(count):
        started = clock()
        result = call()
        durations.append((clock() - started) * 1000)
        if each is not None:
            each(result)
    return durations
