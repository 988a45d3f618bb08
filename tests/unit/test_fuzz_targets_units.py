"""The atheris harness's targets (bench/fuzz/targets.py) on hypothesis' bytes, so
they stay runnable and their properties hold between fuzzing runs. No I/O."""
import pytest
from hypothesis import given, settings, strategies as st

from bench.fuzz.targets import TARGETS, Bytes


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_holds_on_arbitrary_bytes(name):
    @settings(max_examples=60, deadline=None)
    @given(st.binary(max_size=600))
    def run(data):
        TARGETS[name](data)

    run()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_takes_empty_and_undecodable_input(name):
    for data in (b"", b"\xff" * 40, b"\x00" * 40, b"\xed\xa0\x80<a@b>\r\n%"):
        TARGETS[name](data)


def test_bytes_are_taken_in_order_and_run_out_quietly():
    take = Bytes(b"\x01\x00\x03abc\xffz")
    assert take.flag() is True
    assert take.text() == "abc"
    assert take.rest_text() == "\udcffz"
    assert (take.byte(), take.raw(), take.text()) == (0, b"", "")
