"""[redis] sentinels, service_name, sentinel_password_file, read_from_replicas and cluster:
parsed values, errors that name the file and line, and no password in any message."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mx6milter.config import ConfigError, parse_config

SENTINELS = "[redis]\nsentinels = 192.0.2.1:26379 [2001:db8::1]:26379 sentinel.example:26380\n"


def test_sentinels_and_cluster_parsed():
    redis = parse_config(SENTINELS + "service_name = mx6\nread_from_replicas = yes\n"
                         "sentinel_password_file = /etc/mx6milter/sentinel.pw\n").redis
    assert redis.sentinels == (("192.0.2.1", 26379), ("2001:db8::1", 26379),
                               ("sentinel.example", 26380))
    assert (redis.service_name, redis.read_from_replicas) == ("mx6", True)
    assert redis.sentinel_password_file == "/etc/mx6milter/sentinel.pw"
    cluster = parse_config("[redis]\ncluster = 10.0.0.1:7000, 10.0.0.2:7000\n").redis
    assert cluster.cluster == (("10.0.0.1", 7000), ("10.0.0.2", 7000))
    assert parse_config("").redis.sentinels == () and parse_config("").redis.cluster == ()


BAD = [
    ("[redis]\n\nsentinels = 192.0.2.1\n", r"x\.conf:3: \[redis\] sentinels .*HOST:PORT"),
    ("[redis]\ncluster = [::1]:70000\n", r"x\.conf:2: \[redis\] cluster .*HOST:PORT"),
    ("[redis]\nservice_name = my service\n", r"x\.conf:2: \[redis\] service_name"),
    (SENTINELS, r"x\.conf:2: \[redis\] sentinels and service_name go together"),
    ("[redis]\n\nservice_name = mx6\n", r"x\.conf:3: \[redis\] sentinels and service_name"),
    (SENTINELS + "service_name = a\ncluster = 10.0.0.1:7000\n",
     r"x\.conf:4: \[redis\] sentinels and cluster are both set"),
    ("[redis]\nread_from_replicas = yes\n", r"x\.conf:2: .*read_from_replicas needs sentinels"),
    ("[redis]\nsentinel_password_file = /etc/pw\n", r"x\.conf:2: .*needs sentinels"),
    ("[redis]\nurl = redis://127.0.0.1:6379/3\ncluster = 10.0.0.1:7000\n",
     r"x\.conf:2: .*database 0"),
    ("[redis]\nkey_prefix = a{b}\n", r"x\.conf:2: .*braces"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_topology_names_the_line(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(text, "x.conf")


def test_errors_never_show_the_url_password():
    with pytest.raises(ConfigError) as caught:
        parse_config("[redis]\nurl = redis://u:s3cret@127.0.0.1/2\ncluster = 10.0.0.1:7000\n")
    assert "s3cret" not in str(caught.value)


@given(st.text(max_size=200))
def test_any_sentinels_value_parses_or_is_a_config_error(value):
    if "\n" in value or "\r" in value:
        value = value.replace("\n", " ").replace("\r", " ")
    try:
        redis = parse_config(f"[redis]\nsentinels = {value}\nservice_name = s\n").redis
    except ConfigError:
        return
    for host, port in redis.sentinels:
        assert host and 0 < port < 65536


def test_where_redis_is_said_without_a_password():
    from mx6milter.service import describe_redis
    sentinel = parse_config("[redis]\nurl = redis://u:s3cret@/2\n" + SENTINELS[8:]
                            + "service_name = mx6\n").redis
    assert describe_redis(sentinel) == ("Sentinel service mx6 (sentinels 192.0.2.1:26379 "
                                        "[2001:db8::1]:26379 sentinel.example:26380)")
    cluster = parse_config("[redis]\nurl = redis://u:s3cret@/0\ncluster = 10.0.0.1:7000\n").redis
    assert describe_redis(cluster) == "Cluster 10.0.0.1:7000"
    single = parse_config("[redis]\nurl = redis://u:s3cret@127.0.0.1/0\n").redis
    assert "s3cret" not in describe_redis(single)
