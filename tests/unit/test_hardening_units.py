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


# --- Redis credentials never reach a log or an error --------------------------------------

from mx6milter.config import ConfigError, parse_config, redact_url  # noqa: E402

PASSWORD = "s3cr%2Ft-pw"


@pytest.mark.parametrize("url, shown", [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    (f"redis://:{PASSWORD}@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    (f"redis://mx6milter:{PASSWORD}@[::1]:6379/0", "redis://mx6milter:***@[::1]:6379/0"),
    ("redis://mx6milter@127.0.0.1/0", "redis://mx6milter@127.0.0.1/0"),
    (f"rediss://h:6380/0?ssl_ca_certs=/etc/ca.pem&password={PASSWORD}",
     "rediss://h:6380/0?ssl_ca_certs=/etc/ca.pem&password=***"),
    (f"unix:///run/redis.sock?db=1&password={PASSWORD}", "unix:///run/redis.sock?db=1&password=***"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize("url", [
    "redis://:s3cr/t-pw@127.0.0.1:6379/0",        # '/' unquoted: the rest parses as a port
    "redis://:s3cr3t-pw@127.0.0.1:99999/0",
    "redis://:s3cr3t-pw@127.0.0.1:6379/0?db=zero",
])
def test_a_bad_url_error_does_not_show_the_password(url):
    with pytest.raises(ConfigError) as err:
        parse_config(f"[redis]\nurl = {url}\n", "x.conf")
    assert "x.conf:2: [redis] url" in str(err.value)
    assert "s3cr" not in str(err.value), str(err.value)


def test_startup_warning_does_not_show_the_password(caplog):
    from types import SimpleNamespace
    from mx6milter.service import self_check
    config = parse_config(f"[redis]\nurl = redis://:{PASSWORD}@127.0.0.1:1/0\n")
    store = SimpleNamespace(ping=lambda: False, check_schema=lambda: 1)
    resolver = SimpleNamespace(query=lambda *a: [])
    self_check(SimpleNamespace(config=config, store=store, resolver=resolver))
    text = caplog.text
    assert "redis://:***@127.0.0.1:1/0" in text and PASSWORD not in text


def test_url_options_redis_py_does_not_take_are_config_errors():
    ok = parse_config("[redis]\nurl = rediss://h:6380/0?ssl_ca_certs=/etc/ca.pem"
                      "&ssl_check_hostname=true\n")
    assert ok.redis.url.startswith("rediss://")
    for url, option in [("redis://h/0?ssl_ca_certs=/etc/ca.pem", "ssl_ca_certs"),
                        ("rediss://h/0?ssl_ca_cert=/etc/ca.pem", "ssl_ca_cert")]:
        with pytest.raises(ConfigError, match=f"x.conf:2: .*no option '{option}'"):
            parse_config(f"[redis]\nurl = {url}\n", "x.conf")


def test_password_in_url_and_password_file_is_a_config_error():
    for url in ("redis://:pw@h/0", "redis://u:pw@h/0", "redis://h/0?password=pw"):
        with pytest.raises(ConfigError, match="password_file is set and url carries a password"):
            parse_config(f"[redis]\nurl = {url}\npassword_file = /etc/pw\n", "x.conf")
    assert parse_config("[redis]\nurl = redis://u@h/0\npassword_file = /etc/pw\n").redis \
        .password_file == "/etc/pw"


def test_password_file_read_errors(tmp_path):
    from mx6milter.service import read_redis_password
    assert read_redis_password("") is None
    good = tmp_path / "pw"
    good.write_text("p@ss:w/rd\nignored\n")
    assert read_redis_password(str(good)) == "p@ss:w/rd"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_redis_password(str(empty))
    with pytest.raises(ConfigError, match="cannot read"):
        read_redis_password(str(tmp_path / "missing"))


# --- local parts: never folded into ASCII ------------------------------------------------

from mx6milter.addresses import normalise_address  # noqa: E402


@pytest.mark.parametrize("given, stored", [
    ("Alice.Smith@Example.ORG", "alice.smith@example.org"),
    ("\u212aim@example.org", "\u212aim@example.org"),          # Kelvin sign is not k
    ("\u0130lker@example.org", "\u0130lker@example.org"),      # dotted capital I stays
    ("JOS\u00c9@example.org", "jos\u00e9@example.org"),        # É to é: non-ASCII stays so
    ("Stra\u00dfe@example.org", "stra\u00dfe@example.org"),    # ß is not ss
    ("\uff2b\uff49\uff4d@example.org", "\uff4b\uff49\uff4d@example.org"),   # fullwidth stays so
])
def test_fold_never_into_ascii(given, stored):
    assert normalise_address(given, fold_local_part=True) == stored


@pytest.mark.parametrize("other, entry", [
    ("\u212aim@example.org", "kim@example.org"),
    ("\u0131nfo@example.org", "info@example.org"),            # dotless i
    ("\u0130nfo@example.org", "info@example.org"),
    ("strasse@example.org", "stra\u00dfe@example.org"),
    ("\uff4b\uff49\uff4d@example.org", "kim@example.org"),
    ("\u017fam@example.org", "sam@example.org"),              # long s
    ("jos\u00e9@example.org", "jose\u0301@example.org"),     # NFC and NFD: compared as sent
])
def test_no_other_mailbox_matches_an_entry(other, entry):
    assert normalise_address(other) != normalise_address(entry)


# --- running as root, files others may read or write ------------------------------------------

import logging  # noqa: E402
import os  # noqa: E402

from mx6milter import privileges  # noqa: E402
from mx6milter.config import load_config  # noqa: E402
from mx6milter.service import read_redis_password, read_secret  # noqa: E402


@pytest.mark.parametrize("euid, warned", [(0, True), (1000, False)])
def test_running_as_root_is_warned(monkeypatch, caplog, euid, warned):
    monkeypatch.setattr(privileges.os, "geteuid", lambda: euid)
    with caplog.at_level(logging.WARNING, "mx6milter"):
        privileges.warn_if_root()
    assert ("[milter] user" in caplog.text) == warned


def test_the_daemon_warns_after_dropping_privileges():
    import inspect
    from mx6milter import daemon
    for run in (daemon.Daemon.run, daemon.Supervisor.run):
        source = inspect.getsource(run)
        assert source.index("drop_privileges(") < source.index("warn_if_root()")


def test_world_writable_config_is_refused(tmp_path):
    path = tmp_path / "mx6milter.conf"
    path.write_text("[policy]\nmode = report\n")
    os.chmod(path, 0o644)
    assert load_config(str(path)).policy.mode == "report"
    os.chmod(path, 0o646)
    with pytest.raises(ConfigError, match=f"{path}: writable by every user"):
        load_config(str(path))


@pytest.mark.parametrize("reader, content", [(read_secret, b"x" * 32),
                                             (read_redis_password, b"a-password")])
def test_secret_files_others_can_write_are_refused_readable_warned(tmp_path, caplog, reader,
                                                                    content):
    path = tmp_path / "secret"
    path.write_bytes(content)
    os.chmod(path, 0o640)
    with caplog.at_level(logging.WARNING, "mx6milter"):
        assert reader(str(path))
    assert caplog.text == ""
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, "mx6milter"):
        assert reader(str(path))
    assert f"{path} is readable by every user" in caplog.text
    os.chmod(path, 0o602)
    with pytest.raises(ConfigError, match=f"{path}: writable by every user"):
        reader(str(path))
