"""The history greenlist's stored entry, no I/O."""
import pytest

from mx6milter.evidence.history import Entry


def test_entry_parse_rejects_garbage():
    assert Entry.parse("3 100 102 0") == Entry(3, 100, 102, 0)
    with pytest.raises(ValueError):
        Entry.parse("garbage")
