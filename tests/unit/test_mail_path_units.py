"""The mail path's configuration, no Redis: a URL redis-py cannot use."""
import pytest

from conftest import make_config
from mx6milter.config import ConfigError


@pytest.mark.parametrize("url", ["redis://127.0.0.1:abc/0", "redis://[::1/0",
                                 "redis://127.0.0.1/0?socket_timeout=soon"])
def test_a_redis_url_redis_py_cannot_use_is_a_config_error(url):
    with pytest.raises(ConfigError, match=r"\[redis\] url"):
        make_config("", url)
