"""Every fuzz target, one after another, each in its own atheris process:

    .venv/bin/python -m bench.fuzz --runs 1000000 [--only addresses,reply] [--out DIR]

Needs the ``fuzz`` extra (``pip install -e .[fuzz]``). Each target keeps its
corpus in OUT/corpus/TARGET (later runs start from it); an input that breaks a
target is written to OUT/ as crash-..., timeout-... or oom-... and the command
exits 1. One input taking more than ``--timeout`` seconds counts as a failure
(hostile input must have a bounded cost). ``--max-seconds`` stops each target
after that long (its line says "stopped early" and the inputs it ran); so does
SIGUSR1 sent to a target's process (libFuzzer's graceful exit; the count is
the last one it printed). Prints one line per target and writes
OUT/summary.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from .targets import TARGETS

DONE = re.compile(r"Done (\d+) runs in (\d+) second")
STATUS = re.compile(r"^#(\d+)\t", re.MULTILINE)


def run_target(name: str, runs: int, out: Path, timeout: int, max_seconds: int = 0) -> dict:
    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench.fuzz.run", name, f"-runs={runs}",
               f"-artifact_prefix={out}/{name}-", f"-timeout={timeout}", "-rss_limit_mb=2048",
               "-max_len=4096", "-print_final_stats=1", f"-max_total_time={max_seconds}", str(corpus)]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace")
    done = DONE.search(proc.stderr)
    runs = int(done.group(1)) if done else None
    if runs is None and "exiting as requested" in proc.stderr:   # SIGUSR1: stopped by hand
        statuses = STATUS.findall(proc.stderr)
        runs = int(statuses[-1]) if statuses else 0              # the last count libFuzzer printed
    result = {"target": name, "runs": runs,
              "seconds": round(time.monotonic() - started), "returncode": proc.returncode}
    if proc.returncode or not done:
        (out / f"{name}.log").write_text(proc.stderr)
        result["log"] = str(out / f"{name}.log")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--only", default="", help="comma-separated targets (default: all)")
    parser.add_argument("--out", default="bench/out/fuzz", help="corpus and findings directory")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--max-seconds", type=int, default=0,
                        help="stop a target after this long, with fewer inputs (0: no limit)")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target {unknown[0]}; known: {', '.join(TARGETS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               "machine": f"{platform.node()} {platform.machine()} Python {platform.python_version()}",
               "command": " ".join([Path(sys.executable).name, "-m", "bench.fuzz"] + (argv or sys.argv[1:])),
               "targets": []}
    failed = False
    for name in names:
        result = run_target(name, args.runs, out, args.timeout, args.max_seconds)
        summary["targets"].append(result)
        ok = result["returncode"] == 0 and result["runs"] is not None
        failed |= not ok
        short = " (stopped early)" if ok and result["runs"] < args.runs else ""
        print(f"{name:16} {result['runs'] or 0:>10,} inputs {result['seconds']:>6} s  "
              f"{'ok' + short if ok else 'FAILED, see ' + result.get('log', '')}", flush=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
