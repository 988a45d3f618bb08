"""One fuzz target under atheris (libFuzzer): ``python -m bench.fuzz.run TARGET [libFuzzer args]``.

``python -m bench.fuzz`` runs every target this way, one process each (libFuzzer
runs one target per process)."""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["mx6milter"]):
    from bench.fuzz.targets import TARGETS


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0]] + sys.argv[2:], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
