"""mx6ctl ip|domain|addressbook without Redis: what is refused before any connection."""
from ctl_runner import Ctl


def test_missing_config_is_exit_2(tmp_path):
    result = Ctl(tmp_path, "redis://127.0.0.1:1/0").process("-c", "/nonexistent.conf", "ip", "list")
    assert result.returncode == 2 and b"cannot read" in result.stderr
