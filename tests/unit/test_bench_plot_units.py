"""bench/plot.py's reading of a run's figures (the drawing itself runs in the bench smoke test)."""
from bench.plot import throughput


def sample(config, sessions, messages, seconds, rnd=0):
    return {"config": config, "sessions": sessions, "round": rnd, "messages": messages,
            "seconds": seconds, "warnings": {}}


def test_throughput_is_the_median_rate_per_configuration_and_session_count():
    results = {"mta_samples": [
        sample("none", 16, 400, 1.0, 0), sample("none", 16, 400, 2.0, 1),
        sample("none", 16, 400, 4.0, 2), sample("none", 1, 40, 1.0),
        sample("mx6-unix", 16, 400, 2.0, 0), sample("mx6-unix", 64, 800, 2.0, 0)]}
    assert throughput(results) == {"none": [(1, 40.0), (16, 200.0)],
                                   "mx6-unix": [(16, 200.0), (64, 400.0)]}
    assert throughput({}) == {}
