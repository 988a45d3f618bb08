"""The house in rooms: which layer of mx6milter may import which (DESIGN.md, Architecture).

Every module is parsed with ``ast``; every import counts, at the top or inside a
function. Layers, from the bottom:

  core       model config policy reply addresses entries prefixes vcard membudget: pure
  edges      dns store metrics: the one resolver; Redis (store owns every key); Prometheus
  evidence   evidence/*: one source a module, returning its findings
  evaluate   evaluate: gathers evidence in one visible order, then decides
  service    service logs: wiring (config -> store, resolver, evaluator), no pymilter; log records
  adapter    milter daemon privileges cli: the pymilter adapter, the process, entry points
  ctl        ctl/*: mx6ctl, one module per verb group
  outbound   outbound/*: the MX6 sending side

A module added to a subpackage takes the subpackage's layer; a new top-level
module must be given one in LAYERS below.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mx6milter"

LAYERS = {
    "mx6milter": "core",                       # __init__: the version
    "mx6milter.model": "core", "mx6milter.config": "core", "mx6milter.policy": "core",
    "mx6milter.reply": "core", "mx6milter.addresses": "core", "mx6milter.entries": "core",
    "mx6milter.prefixes": "core", "mx6milter.vcard": "core", "mx6milter.membudget": "core",
    "mx6milter.dns": "edges", "mx6milter.store": "edges", "mx6milter.metrics": "edges",
    "mx6milter.evidence": "evidence",
    "mx6milter.evaluate": "evaluate", "mx6milter.journal": "evaluate",
    "mx6milter.service": "service", "mx6milter.logs": "service",
    "mx6milter.milter": "adapter", "mx6milter.daemon": "adapter",
    "mx6milter.privileges": "adapter", "mx6milter.cli": "adapter",
    "mx6milter.ctl": "ctl",
    "mx6milter.outbound": "outbound",
}

# Layer -> the layers of mx6milter it must not import.
FORBIDDEN_LAYERS = {
    "core": {"edges", "evidence", "evaluate", "service", "adapter", "ctl", "outbound"},
    "edges": {"evidence", "evaluate", "service", "adapter", "ctl", "outbound"},
    "evidence": {"evaluate", "service", "adapter", "ctl", "outbound"},
    "evaluate": {"service", "adapter", "ctl", "outbound"},
    "service": {"adapter", "ctl", "outbound"},
    "ctl": {"adapter"},
    "outbound": {"evidence", "evaluate", "service", "adapter", "ctl", "edges"},
}
# ... except these modules of a forbidden layer (an exception names its reason).
ALLOWED_MODULES = {
    "outbound": {"mx6milter.dns"},             # the one resolver serves the sending side too
}

# Layer -> third-party top-level packages it must not import.
FORBIDDEN_PACKAGES = {
    "core": {"redis", "dns", "Milter", "milter"},
}
PYMILTER = {"Milter", "milter"}
PYMILTER_MAY = {"mx6milter.milter", "mx6milter.daemon", "mx6milter.cli"}
# store.py owns every Redis key: no other module talks to redis-py.
REDIS_MAY = {"mx6milter.store"}

# Imports that break a rule today, kept visible here until the code is changed
# (remove the line when it is; the test fails on a stale line as well).
KNOWN_VIOLATIONS = {
    # [redis] url is checked with redis-py's own parser and connection options inside
    # the config validator, so --check-config accepts exactly what the store can use
    ("mx6milter.config", "redis.connection"),
    ("mx6milter.config", "redis"),
    # mx6ctl turns redis.exceptions.RedisError into exit 1 itself, not a store exception
    ("mx6milter.ctl", "redis"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name: str) -> str | None:
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def imports(name: str, path: Path, known: set) -> set:
    """Every module ``name`` imports, absolute: 'redis.connection', 'mx6milter.store', ..."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            for alias in node.names:               # from . import ctl: a module, not a name
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")
    return found


def violations() -> set:
    known = modules()
    found = set()
    for name, path in known.items():
        layer = layer_of(name)
        for target in imports(name, path, known):
            top = target.split(".")[0]
            if top == "mx6milter":
                bad = layer_of(target) in FORBIDDEN_LAYERS.get(layer, set()) and \
                    target not in ALLOWED_MODULES.get(layer, set())
            else:
                bad = top in FORBIDDEN_PACKAGES.get(layer, set()) or \
                    (top in PYMILTER and name not in PYMILTER_MAY) or \
                    (top == "redis" and name not in REDIS_MAY)
            if bad:
                found.add((name, target))
    return found


def test_every_module_has_a_layer():
    assert modules(), PACKAGE
    assert [name for name in modules() if layer_of(name) is None] == []


def test_the_ast_sees_relative_and_lazy_imports():
    known = modules()
    assert "mx6milter.ctl" in imports("mx6milter.cli", known["mx6milter.cli"], known)
    assert "mx6milter.daemon" in imports("mx6milter.cli", known["mx6milter.cli"], known)
    assert "Milter" in imports("mx6milter.milter", known["mx6milter.milter"], known)
    assert "mx6milter.model" in imports("mx6milter.evidence.auth", known["mx6milter.evidence.auth"],
                                        known)


def test_each_layer_imports_only_what_it_may():
    found = violations()
    new = sorted(found - KNOWN_VIOLATIONS)
    assert new == [], "imports across the layers (see this file's docstring): " + \
        ", ".join(f"{name} imports {target}" for name, target in new)


def test_known_violations_are_still_there():
    """A fixed violation must leave KNOWN_VIOLATIONS, so that it cannot come back unseen."""
    assert sorted(KNOWN_VIOLATIONS - violations()) == []


WITHOUT_PYMILTER = (
    "import sys\n"
    "sys.modules['Milter'] = None\n"      # import Milter / import milter now raise ImportError
    "sys.modules['milter'] = None\n"
    "sys.argv[0] = 'mx6ctl'\n"
)


def run_without_pymilter(body: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_PYMILTER + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=60)


def test_mx6ctl_needs_no_pymilter():
    result = run_without_pymilter("""
        import mx6milter.ctl
        from mx6milter.cli import ctl_main
        ctl_main(["--help"])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mx6ctl"), result.stdout


def test_every_module_but_milter_and_daemon_imports_without_pymilter():
    names = sorted(name for name in set(modules()) - PYMILTER_MAY | {"mx6milter.cli"}
                   if not name.endswith(".__main__"))         # that one runs mx6ctl
    result = run_without_pymilter(f"""
        import importlib
        for name in {names!r}:
            try:
                importlib.import_module(name)
            except ImportError as err:
                print(name, err)
    """)
    assert (result.returncode, result.stdout) == (0, ""), result.stderr
