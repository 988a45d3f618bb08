"""MTA level: one private Postfix, smtp-source at 1, 16 and 64 sessions.

Every configuration is its own smtpd listener (port) of the same Postfix,
so they share the queue, cleanup and qmgr. Measurements are interleaved:
at each session count, round after round, every configuration runs once
(in a rotated order), and ratios are taken between runs of the same round.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from . import inputs, procs

CONFIGS = ("none", "null-unix", "null-tcp", "null-tcp-nagle", "mx6-unix", "mx6-unix-2p",
           "mx6-tcp", "mx6-tcp-nagle", "opendkim+opendmarc")
LABELS = {
    "none": "Postfix, no milter",
    "null-unix": "do-nothing pymilter, unix socket",
    "null-tcp": "do-nothing pymilter, TCP (TCP_NODELAY)",
    "null-tcp-nagle": "do-nothing pymilter, TCP without TCP_NODELAY",
    "mx6-unix": "mx6milter, unix socket",
    "mx6-unix-2p": "mx6milter, unix socket, 2 processes",
    "mx6-tcp": "mx6milter, TCP (TCP_NODELAY)",
    "mx6-tcp-nagle": "mx6milter, TCP without TCP_NODELAY",
    "opendkim+opendmarc": "OpenDKIM + OpenDMARC, unix sockets",
}


@dataclass
class Sample:
    config: str
    sessions: int
    round: int
    messages: int
    seconds: float
    warnings: dict = field(default_factory=dict)    # kind -> smtp-source warning lines

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def send_mix(postfix: procs.BenchPostfix, config: str, inp: inputs.Inputs, sessions: int,
             messages: int) -> Sample:
    """MESSAGES split evenly over the four kinds of client; at 1 session one kind
    after the other, otherwise the four at once with SESSIONS/4 sessions each."""
    per_kind = max(1, messages // len(inputs.KINDS))
    port = postfix.ports[config]

    def start(kind, count_sessions):
        return procs.smtp_source(kind.client, port, count_sessions, per_kind,
                                 inp.message_files[kind.name], kind.sender, inputs.RECIPIENT,
                                 f"mail.{kind.domain}")

    warnings = {}
    started = time.perf_counter()
    if sessions == 1:
        for kind in inputs.KINDS:
            (code, err), = procs.wait_all([start(kind, 1)])
            warnings[kind.name] = _count_warnings(code, err)
    else:
        running = [(kind, start(kind, max(1, sessions // len(inputs.KINDS))))
                   for kind in inputs.KINDS]
        results = procs.wait_all([proc for _, proc in running])
        for (kind, _), (code, err) in zip(running, results):
            warnings[kind.name] = _count_warnings(code, err)
    seconds = time.perf_counter() - started
    return Sample(config, sessions, 0, per_kind * len(inputs.KINDS), seconds, warnings)


def _count_warnings(code: int, err: str) -> int:
    if code != 0:
        raise RuntimeError(f"smtp-source failed ({code}): {err[-2000:]}")
    return sum(1 for line in err.splitlines() if "warning" in line)


def run(postfix: procs.BenchPostfix, inp: inputs.Inputs, levels: dict, rounds: int,
        configs=CONFIGS, log=print) -> list:
    """levels: sessions -> messages per measurement. Returns every Sample."""
    samples = []
    for config in configs:                   # warm-up: caches, smtpd processes
        send_mix(postfix, config, inp, 4, 40)
    postfix.wait_until_idle()
    for sessions, messages in levels.items():
        for rnd in range(rounds):
            order = list(configs[rnd % len(configs):]) + list(configs[:rnd % len(configs)])
            for config in order:
                sample = send_mix(postfix, config, inp, sessions, messages)
                sample.round = rnd
                samples.append(sample)
                postfix.wait_until_idle()
                log(f"  mta sessions={sessions:>2} round={rnd} {config:<20} "
                    f"{sample.rate:8.1f} msg/s  warnings={sample.warnings}")
    return samples


def median_rate(samples: list, config: str, sessions: int) -> float:
    rates = [s.rate for s in samples if s.config == config and s.sessions == sessions]
    return statistics.median(rates) if rates else float("nan")


def paired_ratio(samples: list, config: str, baseline: str, sessions: int) -> float:
    """Median over rounds of rate(config)/rate(baseline) in the same round."""
    by_round = {}
    for s in samples:
        if s.sessions == sessions and s.config in (config, baseline):
            by_round.setdefault(s.round, {})[s.config] = s.rate
    ratios = [r[config] / r[baseline] for r in by_round.values()
              if config in r and baseline in r and r[baseline]]
    return statistics.median(ratios) if ratios else float("nan")
