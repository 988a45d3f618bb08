"""Hardening without servers: reserved source names, redacted URLs, case folding,
running as root, file permissions."""
import pytest

from mx6milter.entries import EntryError, check_source


# --- source names that collide with the key schema ------------------------------------------


def test_source_named_sources_is_refused():
    # <p>KIND:sources is the set of source names; a source of that name would make
    # the same key a hash too, and every lookup of the kind would fail.
    with pytest.raises(EntryError, match="reserved"):
        check_source("sources")


@pytest.mark.parametrize("name", ["Sources", "sources2", "my-sources"])
def test_names_near_the_reserved_one_are_fine(name):
    # Redis keys are case-sensitive: these are other keys.
    assert check_source(name) == name
