"""The benchmark's results as pictures: ``python -m bench.plot RESULTS.json [--out DIR]``.

Draws, from the raw figures a run writes (``results.json``):

* ``throughput.svg``: messages/s through Postfix against concurrent SMTP
  sessions, one line per configuration (the median of the rounds);
* ``rss.svg``: the daemon's RSS against messages handled.

``python -m bench`` draws them next to its report when matplotlib is installed
(the ``bench`` extra); bench/RESULTS.rst shows those of its latest run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")                     # files only, no display
import matplotlib.pyplot as plt

from .mta import CONFIGS, LABELS


def throughput(results: dict) -> dict:
    """configuration -> [(sessions, median msg/s)], from the MTA-level samples."""
    rates: dict = {}
    for sample in results.get("mta_samples", []):
        rate = sample["messages"] / sample["seconds"]
        rates.setdefault(sample["config"], {}).setdefault(sample["sessions"], []).append(rate)
    return {config: sorted((n, statistics.median(r)) for n, r in by_sessions.items())
            for config, by_sessions in rates.items()}


def _title(results: dict, what: str) -> str:
    machine = results.get("machine", {})
    return (f"{what}\n{results.get('date', '?')}, plan {results.get('plan', '?')}, "
            f"{machine.get('nproc', '?')} CPUs, code {machine.get('git', '?')}")


def draw_throughput(results: dict, path: Path) -> Path | None:
    lines = throughput(results)
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for config in [c for c in CONFIGS if c in lines] + sorted(set(lines) - set(CONFIGS)):
        points = lines[config]
        ax.plot([n for n, _ in points], [r for _, r in points], marker="o",
                label=LABELS.get(config, config))
    ax.set_xscale("log", base=2)
    sessions = sorted({n for points in lines.values() for n, _ in points})
    ax.set_xticks(sessions, [str(n) for n in sessions])
    ax.set_xlabel("concurrent SMTP sessions")
    ax.set_ylabel("messages/s through Postfix")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(_title(results, "Throughput by configuration"), fontsize="medium")
    return _save(fig, path)


def draw_rss(results: dict, path: Path) -> Path | None:
    points = results.get("rss_points")
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([n for n, _ in points], [kb / 1024 for _, kb in points], marker="o")
    ax.set_xlabel("messages handled (warm mix, 16 sessions)")
    ax.set_ylabel("mx6milter RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(_title(results, "Daemon memory over messages"), fontsize="medium")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    # No timestamps or random ids in the SVG: the same results give the same file.
    metadata = {"Date": None} if path.suffix == ".svg" else {"Software": None}
    fig.savefig(path, metadata=metadata)
    plt.close(fig)
    return path


def draw(results: dict, out: Path, fmt: str = "svg") -> list:
    """Every picture RESULTS has data for, into OUT; the paths written."""
    matplotlib.rcParams["svg.hashsalt"] = "mx6milter"
    drawn = [draw_throughput(results, out / f"throughput.{fmt}"),
             draw_rss(results, out / f"rss.{fmt}")]
    return [path for path in drawn if path is not None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.split("\n")[0])
    parser.add_argument("results", help="results.json of a run (bench/out/DATE-TIME/)")
    parser.add_argument("--out", help="directory for the pictures (default: the results' own)")
    parser.add_argument("--format", choices=("svg", "png"), default="svg")
    args = parser.parse_args(argv)
    path = Path(args.results)
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        print(f"bench.plot: {path}: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    drawn = draw(results, out, args.format)
    if not drawn:
        print(f"bench.plot: {path}: no MTA samples and no RSS points to draw", file=sys.stderr)
        return 1
    for written in drawn:
        print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
