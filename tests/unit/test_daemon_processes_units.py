"""[milter] processes and the supervisor's restart back-off, without starting the daemon."""
import pytest

from mx6milter.config import ConfigError, parse_config
from mx6milter.daemon import Supervisor


@pytest.mark.parametrize("value", ["0", "65", "two", "-1"])
def test_processes_out_of_range_is_refused(value):
    with pytest.raises(ConfigError, match=r"x\.conf:2: \[milter\] processes"):
        parse_config(f"[milter]\nprocesses = {value}\n", "x.conf")


def test_processes_default_and_bounds():
    assert parse_config("").milter.processes == 1
    assert parse_config("[milter]\nprocesses = 64\n").milter.processes == 64


def test_restart_back_off_grows_while_a_worker_keeps_dying_young():
    supervisor = Supervisor(parse_config(""))
    delays = [supervisor._schedule_restart(0, young=True) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert supervisor._schedule_restart(0, young=False) == 0   # it had lived: at once
    assert supervisor._schedule_restart(0, young=True) == 1
    assert supervisor._schedule_restart(1, young=True) == 1    # per worker slot
