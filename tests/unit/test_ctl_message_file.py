"""mx6ctl explain and send read MESSAGE_FILE through one bounded reader. No Redis."""
import pytest

from mx6milter.ctl import common
from mx6milter.ctl.common import UsageError, read_message_file


def test_reads_a_file(tmp_path):
    path = tmp_path / "m.eml"
    path.write_bytes(b"From: a@example.net\r\n\r\nbody\r\n")
    assert read_message_file(str(path)) == b"From: a@example.net\r\n\r\nbody\r\n"


def test_refuses_more_than_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "MAX_MESSAGE_FILE", 16)
    path = tmp_path / "big.eml"
    path.write_bytes(b"x" * 17)
    with pytest.raises(UsageError, match="larger than"):
        read_message_file(str(path))
    path.write_bytes(b"x" * 16)
    assert len(read_message_file(str(path))) == 16


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read the message"):
        read_message_file(str(tmp_path / "missing.eml"))
