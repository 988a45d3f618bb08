"""Benchmarks for mx6milter: ``python -m bench`` (see bench/README.rst)."""
