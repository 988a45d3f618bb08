"""Fuzzing the parsers of hostile input with atheris: ``python -m bench.fuzz --runs N``."""
