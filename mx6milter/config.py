"""The INI configuration: parsed once into frozen dataclasses.

Unknown sections, unknown keys and bad values are errors that name the
file, the line and the key, so ``--check-config`` can point at them.
"""
from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Self

from .addresses import AddressError, domain_to_ascii

DEFAULT_CONFIG = "/etc/mx6milter/mx6milter.conf"   # mx6milter's and mx6ctl's -c
MODES = ("defensive", "mx6", "report")


class ConfigError(Exception):
    """A configuration problem, with the location where it was found."""


# --- value parsers: each takes the raw string, returns the value or raises ValueError


class SocketSpec(str):
    """A milter socket as libmilter takes it ("unix:/PATH", "inet:PORT@HOST",
    "inet6:PORT@[HOST]"), parsed once: ``kind`` (unix, inet, inet6), ``path`` for
    unix sockets, ``host`` and ``port`` for TCP. Still the string itself, for
    libmilter, logs and comparisons."""
    kind: str
    path: str
    host: str
    port: int

    def __new__(cls, value: str) -> Self:
        spec = super().__new__(cls, value)
        m = re.fullmatch(r"(?:unix|local):(/\S+)", value)
        if m:
            spec.kind, spec.path, spec.host, spec.port = "unix", m.group(1), "", 0
            return spec
        m = re.fullmatch(r"(inet|inet6):(\d+)(?:@(\S+))?", value)
        if m and 0 < int(m.group(2)) < 65536:
            default = "::1" if m.group(1) == "inet6" else "127.0.0.1"
            spec.kind, spec.path, spec.port = m.group(1), "", int(m.group(2))
            spec.host = (m.group(3) or "").strip("[]") or default
            return spec
        raise ValueError("expected unix:/PATH, inet:PORT@HOST or inet6:PORT@[HOST]")

    @property
    def is_unix(self) -> bool:
        return self.kind == "unix"


def _redis_url(value: str) -> str:
    if re.fullmatch(r"(redis|rediss|unix)://\S+", value):
        from redis.connection import parse_url
        try:
            parse_url(value)   # what the daemon will do: a bad port must stop --check-config
        except ValueError:
            # Not the parser's words: they may quote a piece of the password.
            raise ValueError("not a valid Redis URL (host, port, database or query); expected "
                             "redis://[USER[:PASSWORD]@]HOST:PORT/DB, a password with / : @ or "
                             "% written %-encoded") from None
        import redis
        try:   # builds the connection object (no connecting): an unknown option fails here
            redis.ConnectionPool.from_url(value).make_connection()
        except TypeError as err:
            option = re.search(r"argument '(\w+)'", str(err))
            raise ValueError(f"redis-py takes no option {option.group(1) if option else '?'!r} "
                             "in this URL (ssl_* options need rediss://)") from None
        return value
    raise ValueError("expected redis://HOST:PORT/DB, rediss://... or unix:///PATH")


def url_password(url: str) -> str | None:
    """The password a Redis URL carries (user information or ?password=), as redis-py reads it."""
    from redis.connection import parse_url
    try:
        return parse_url(url).get("password")
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """A Redis URL fit to show: any password (``:PASSWORD@``, ``?password=``) as ***.

    Every message, log line and error that shows [redis] url goes through here.
    Split by hand rather than by urllib, so that a URL urllib reads otherwise
    (a '/' or '?' left unencoded in the password) is still redacted: everything
    up to the last '@' is user information.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, tail = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = userinfo.split(":", 1)[0] + ":***@" + tail
    return scheme + sep + re.sub(r"([?&]password=)[^&#]*", r"\1***", rest, flags=re.IGNORECASE)


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _processes(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 64:
        raise ValueError("must be a whole number from 1 to 64")
    return number


def _size(value: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kKmMgG]?)", value)
    if not m:
        raise ValueError("expected a size such as 52428800, 50M or 512K")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def _octal_mode(value: str) -> int:
    if not re.fullmatch(r"0?[0-7]{3}", value):
        raise ValueError("expected an octal file mode such as 0660")
    return int(value, 8)


def _account_or_empty(value: str) -> str:
    """A user or group name, or a number; looked up when the daemon starts."""
    if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d+", value):
        raise ValueError("expected a user or group name, or a number")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError("expected one of: " + ", ".join(choices))
        return value

    return parse


def _reply_code(first_digit: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not re.fullmatch(first_digit + r"\d\d", value):
            raise ValueError(f"expected a three-digit SMTP code starting with {first_digit}")
        return value

    return parse


def _status_code(first_digit: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not re.fullmatch(first_digit + r"\.\d{1,3}\.\d{1,3}", value):
            raise ValueError(f"expected an enhanced status code such as {first_digit}.7.1")
        return value

    return parse


def _reply_text(value: str) -> str:
    # CR/LF cannot be carried in a reply line; '%' is doubled when the reply is built.
    if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
        raise ValueError("control characters are not allowed in reply text")
    if not value.isascii():
        raise ValueError("SMTP replies are ASCII")
    return value


def _domain_name(value: str) -> str:
    value = value.strip().rstrip(".").lower()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", value):
        raise ValueError("expected a host name such as mx.example.org")
    return value


def _domains(value: str) -> tuple:
    """Mail domains, blank or comma separated, as A-labels (addresses.domain_to_ascii)."""
    domains = []
    for item in value.replace(",", " ").split():
        try:
            domains.append(domain_to_ascii(item))
        except AddressError as err:
            raise ValueError(str(err)) from None
    return tuple(dict.fromkeys(domains))


def _spf_record_or_empty(value: str) -> str:
    if value and not re.fullmatch(r"v=spf1( [\x21-\x7e]+)*", value, re.IGNORECASE):
        raise ValueError("expected an SPF record such as "
                         "'v=spf1 a/24//64 mx/24//64 -all', or nothing")
    return value


def _header_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,62}", value):
        raise ValueError("expected a header field name such as X-MX6-Verdict")
    return value


def _url_or_empty(value: str) -> str:
    if value and not re.fullmatch(r"https?://[\x21-\x7e]+", value):
        raise ValueError("expected an http:// or https:// URL")
    return value


def _networks(value: str) -> tuple:
    nets = []
    for item in value.replace(",", " ").split():
        try:
            nets.append(ipaddress.ip_network(item, strict=True))
        except ValueError as err:
            raise ValueError(f"{item!r}: {err}") from None
    return tuple(nets)


def _nameservers(value: str) -> tuple:
    servers = []
    for item in value.replace(",", " ").split():
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([0-9.]+)(?::(\d+))?|([0-9a-fA-F:]+)", item)
        if not m:
            raise ValueError(f"{item!r}: expected ADDRESS, ADDRESS:PORT or [IPv6]:PORT")
        host = m.group(1) or m.group(3) or m.group(5)
        port = int(m.group(2) or m.group(4) or 53)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{item!r}: not an IP address") from None
        if not 0 < port < 65536:
            raise ValueError(f"{item!r}: bad port")
        servers.append((host, port))
    return tuple(servers)


def parse_listen(value: str) -> tuple:
    """HOST:PORT or [IPv6]:PORT -> (host, port); the host an IP address."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:([0-9]{1,5})|([0-9.]+):([0-9]{1,5})", value)
    if not m:
        raise ValueError("expected ADDRESS:PORT or [IPv6]:PORT, e.g. 127.0.0.1:9169")
    host, port = m.group(1) or m.group(3), int(m.group(2) or m.group(4))
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise ValueError("the port must be from 1 to 65535")
    return host, port


def _listen_or_empty(value: str) -> str:
    if value:
        parse_listen(value)
    return value


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise ValueError("expected yes or no")


def _opt(parser: Callable[[str], Any], default: str):
    """A config key: how to parse it and its default (as written in the file)."""
    return field(default=parser(default), metadata={"parse": parser, "default": default})


@dataclass(frozen=True)
class MilterSection:
    socket: SocketSpec = _opt(SocketSpec, "unix:/run/mx6milter/mx6milter.sock")  # noqa: RUF009 (immutable)
    socket_mode: int = _opt(_octal_mode, "0660")
    timeout: float = _opt(_positive_float, "600")
    max_message_size: int = _opt(_size, "50M")
    # Bytes held at once, per process, for messages being judged or learnt (mx6milter/membudget.py)
    max_buffered_bytes: int = _opt(_size, "256M")
    max_recipients: int = _opt(_positive_int, "1000")
    user: str = _opt(_account_or_empty, "")           # switch to it after binding; empty: stay
    group: str = _opt(_account_or_empty, "")          # empty: the user's primary group
    socket_group: str = _opt(_account_or_empty, "")   # group of the unix socket, e.g. postfix
    drain_timeout: float = _opt(_positive_float, "30")   # SIGTERM: wait for sessions in flight
    processes: int = _opt(_processes, "1")   # >1: workers forked after binding, one GIL each


def _path_or_empty(value: str) -> str:
    if value and not value.startswith("/"):
        raise ValueError("expected an absolute path")
    return value


def _host_ports(value: str) -> tuple:
    """HOST:PORT ... (a name, an IPv4 address or [IPv6]), for sentinels and cluster seeds."""
    nodes = []
    for item in value.replace(",", " ").split():
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([A-Za-z0-9.-]+):(\d{1,5})", item)
        if not m or not 0 < int(m.group(2) or m.group(4)) < 65536:
            raise ValueError(f"{item!r}: expected HOST:PORT or [IPv6]:PORT")
        nodes.append((m.group(1) or m.group(3), int(m.group(2) or m.group(4))))
    return tuple(nodes)


def _service_name(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        raise ValueError("expected a Sentinel service name (letters, digits, . _ -)")
    return value


def _key_prefix(value: str) -> str:
    if re.search(r"[{}\s]", value):
        raise ValueError("must not hold braces (Redis Cluster hash tags) or spaces")
    return value


@dataclass(frozen=True)
class RedisSection:
    url: str = _opt(_redis_url, "redis://127.0.0.1:6379/0")
    timeout: float = _opt(_positive_float, "0.5")
    key_prefix: str = _opt(_key_prefix, "mx6:")
    password_file: str = _opt(_path_or_empty, "")   # the password, read at start and on reload
    sentinels: tuple = _opt(_host_ports, "")         # with it, url gives only database and credentials
    service_name: str = _opt(_service_name, "")
    sentinel_password_file: str = _opt(_path_or_empty, "")   # the sentinels' own password
    read_from_replicas: bool = _opt(_bool, "no")      # decisions read a replica (Sentinel only)
    cluster: tuple = _opt(_host_ports, "")           # seed nodes of a Redis Cluster


@dataclass(frozen=True)
class PolicySection:
    mode: str = _opt(_choice(*MODES), "defensive")
    authserv_id: str = _opt(_domain_name, "localhost")
    trusted_networks: tuple = _opt(_networks, "")
    defensive_code: str = _opt(_reply_code("4"), "451")
    defensive_status: str = _opt(_status_code("4"), "4.7.1")          # authenticated, no evidence
    defensive_status_unauthenticated: str = _opt(_status_code("4"), "4.7.26")  # no SPF/DKIM pass
    defensive_status_dns: str = _opt(_status_code("4"), "4.4.3")      # DNS failed or too slow
    defensive_status_redis: str = _opt(_status_code("4"), "4.3.0")    # Redis could not be read
    defensive_text: str = _opt(
        _reply_text, "Not accepted over IPv6 from this sender; please retry over IPv4"
    )
    mx6_code: str = _opt(_reply_code("5"), "550")
    mx6_status: str = _opt(_status_code("5"), "5.5.7")
    mx6_text: str = _opt(_reply_text, "Fall back to IPv4: not accepted over IPv6 from this sender")
    registration_url: str = _opt(_url_or_empty, "")
    verdict_header: str = _opt(_header_name, "X-MX6-Verdict")
    spf_last_resort: str = _opt(_spf_record_or_empty, "")   # for domains that publish no SPF
    psl_file: str = _opt(_path_or_empty, "")    # "": Debian's publicsuffix when installed


@dataclass(frozen=True)
class DnsSection:
    nameservers: tuple = _opt(_nameservers, "")
    timeout: float = _opt(_positive_float, "2")
    budget: float = _opt(_positive_float, "8")
    cache_size: int = _opt(_positive_int, "10000")
    cache_bytes: int = _opt(_size, "16M")    # estimated size of the cached answers


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(value: str) -> int:
    """A duration such as 400d, 12h or 2w (s, m, h, d, w), in seconds."""
    m = re.fullmatch(r"(\d{1,9})([smhdw])", value)
    if not m or int(m.group(1)) == 0:
        raise ValueError("expected a positive duration such as 400d, 12h or 2w")
    return int(m.group(1)) * _DURATION_UNITS[m.group(2)]


@dataclass(frozen=True)
class AddressbookSection:
    fold_local_part: bool = _opt(_bool, "yes")
    secret_file: str = _opt(_path_or_empty, "")
    learn: bool = _opt(_bool, "no")                  # outbound mail teaches addressbooks
    learn_expiry: int = _opt(_duration, "400d")      # refreshed at every send
    learn_max_recipients: int = _opt(_positive_int, "50")   # more: the message teaches nothing
    local_domains: tuple = _opt(_domains, "")        # senders whose mail teaches; empty: any
    learn_max_entries: int = _opt(_positive_int, "2000")    # per user; the oldest evicted


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be a whole number, 0 or more")
    return number


@dataclass(frozen=True)
class GreenlistSection:
    """The weaker signals: each switchable; min_signals of them greenlist a message."""
    fcrdns: bool = _opt(_bool, "yes")
    baseline: bool = _opt(_bool, "no")         # FCrDNS and an SPF or DKIM pass (Gmail's minimum)
    networks: bool = _opt(_bool, "yes")
    asn: bool = _opt(_bool, "yes")
    mishandle4xx: bool = _opt(_bool, "yes")
    history: bool = _opt(_bool, "yes")         # learns From domains from IPv4 mail (background)
    registrar: bool = _opt(_bool, "no")        # From domain's registrar on mx6ctl's list (RDAP)
    rdap: bool = _opt(_bool, "no")             # domain age, public registrant, abuse contact
    rdap_min_age: int = _opt(_duration, "90d")
    min_signals: int = _opt(_positive_int, "1")
    history_min_messages: int = _opt(_positive_int, "5")
    history_min_days: int = _opt(_non_negative_int, "14")
    history_expiry_days: int = _opt(_positive_int, "180")
    history_queue_size: int = _opt(_size, "64M")

    def enabled_signals(self) -> tuple:
        return tuple(name for name in ("fcrdns", "baseline", "networks", "asn", "mishandle4xx",
                                       "history", "registrar", "rdap") if getattr(self, name))


def _zones(value: str) -> tuple:
    return tuple(dict.fromkeys(_domain_name(item) for item in value.replace(",", " ").split()))


def _trust(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 4:
        raise ValueError("expected a trust level from 0 to 3 (4: never)")
    return number


@dataclass(frozen=True)
class DnswlSection:
    """DNS whitelists: RFC 5782 queries, dnswl.org's 127.0.x.y answers (y the trust)."""
    zones: tuple = _opt(_zones, "")              # IP zones, e.g. list.dnswl.org; empty: off
    domain_zones: tuple = _opt(_zones, "")       # domain zones for DKIM d=, e.g. dwl.dnswl.org
    whitelist_trust: int = _opt(_trust, "2")
    greenlist_trust: int = _opt(_trust, "1")


@dataclass(frozen=True)
class ArcSection:
    """ARC (RFC 8617): chains sealed last by these domains are verified and trusted."""
    trusted_sealers: tuple = _opt(_domains, "")     # ARC-Seal d= domains; empty: ARC is not checked
    greenlist: bool = _opt(_bool, "yes")            # a validated trusted chain is the signal "arc"


@dataclass(frozen=True)
class RdapSection:
    """RDAP lookups for the registrar and rdap signals; in the background, cached in Redis."""
    enabled: bool = _opt(_bool, "no")
    bootstrap: str = _opt(_path_or_empty, "")      # IANA dns.json; empty: the shipped copy
    ip_bootstrap: str = _opt(_path_or_empty, "")   # IANA ipv6.json; empty: the shipped copy
    timeout: float = _opt(_positive_float, "10")   # one lookup (connect, each read, the whole)
    cache_ttl: int = _opt(_duration, "7d")         # a result is kept this long in Redis
    negative_ttl: int = _opt(_duration, "1d")      # "no record" is kept this long
    min_interval: float = _opt(_positive_float, "1")   # between requests to one server
    max_response_size: int = _opt(_size, "256K")
    queue_size: int = _opt(_positive_int, "1000")  # lookups waiting; beyond, not queued


@dataclass(frozen=True)
class ReportSection:
    """What became of each decision (journal.py): counters, the recent decisions, fingerprints."""
    record: bool = _opt(_bool, "yes")                    # no: mx6ctl report and why see nothing
    fingerprint_days: int = _opt(_positive_int, "5")     # how long a fallback waits for IPv4
    retention_days: int = _opt(_positive_int, "8")       # hourly counters; report --since at most
    stream_length: int = _opt(_positive_int, "20000")    # recent decisions kept for mx6ctl why
    top_size: int = _opt(_positive_int, "1000")          # senders kept per list and hour
    queue_size: int = _opt(_positive_int, "10000")       # records waiting to be written


@dataclass(frozen=True)
class LogSection:
    destination: str = _opt(_choice("stderr", "syslog"), "stderr")
    level: str = _opt(_choice("debug", "info", "warning", "error"), "info")
    syslog_facility: str = _opt(_choice("mail", "daemon", "local0", "local1", "local2",
                                        "local3", "local4", "local5", "local6", "local7"), "mail")
    format: str = _opt(_choice("text", "json"), "text")   # json: one object per line


@dataclass(frozen=True)
class MetricsSection:
    listen: str = _opt(_listen_or_empty, "")   # HOST:PORT for Prometheus' /metrics; empty: off


@dataclass(frozen=True)
class Config:
    milter: MilterSection = field(default_factory=MilterSection)
    redis: RedisSection = field(default_factory=RedisSection)
    policy: PolicySection = field(default_factory=PolicySection)
    dns: DnsSection = field(default_factory=DnsSection)
    addressbook: AddressbookSection = field(default_factory=AddressbookSection)
    greenlist: GreenlistSection = field(default_factory=GreenlistSection)
    dnswl: DnswlSection = field(default_factory=DnswlSection)
    arc: ArcSection = field(default_factory=ArcSection)
    rdap: RdapSection = field(default_factory=RdapSection)
    report: ReportSection = field(default_factory=ReportSection)
    log: LogSection = field(default_factory=LogSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    path: str = ""
    lines: tuple = field(default=(), compare=False, repr=False)   # ((section, key), line number)

    def where(self, section: str, key: str) -> str:
        """'PATH:LINE: ' where a key is set, 'PATH: ' if the file does not set it (a default),
        '' for a Config made without a file: the prefix of an error about the key."""
        line = dict(self.lines).get((section, key))
        if not self.path:
            return ""
        return f"{self.path}:{line}: " if line else f"{self.path}: "


# Sections whose keys take effect only at a restart (the socket, the limits the process
# was started with, the metrics listener): the daemon's reload keeps the running ones
# (keep_restart_sections) and warns; mx6milter.conf(5) marks these keys "(restart)".
RESTART_SECTIONS = ("milter", "metrics")

SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)
            if f.name not in ("path", "lines")}


def _key_lines(text: str) -> dict:
    """Map (section, key) to the line it is set on, for error messages."""
    lines: dict = {}
    section = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or line[0].isspace():
            continue
        m = re.fullmatch(r"\[([^\]]+)\]", stripped)
        if m:
            section = m.group(1).strip()
            lines.setdefault((section, None), number)
            continue
        key = re.split(r"[=:]", stripped, maxsplit=1)[0].strip().lower()
        lines.setdefault((section, key), number)
    return lines


def parse_config(text: str, path: str = "<config>") -> Config:
    """Parse INI text into a Config, or raise ConfigError naming the bad line."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"),
                                       strict=True, empty_lines_in_values=False)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as err:
        raise ConfigError(f"{path}: {err}".replace("\n", " ")) from None
    lines = _key_lines(text)
    sections = {}
    for name in parser.sections():
        where = f"{path}:{lines.get((name, None), '?')}"
        if name not in SECTIONS:
            raise ConfigError(f"{where}: unknown section [{name}]; known: "
                              + ", ".join(f"[{s}]" for s in SECTIONS))
        section_class = SECTIONS[name]
        known = {f.name: f for f in dataclasses.fields(section_class)}
        values = {}
        for key, raw in parser.items(name, raw=True):
            where = f"{path}:{lines.get((name, key), '?')}"
            if key not in known:
                raise ConfigError(f"{where}: unknown key {key!r} in [{name}]; known: "
                                  + ", ".join(sorted(known)))
            try:
                values[key] = known[key].metadata["parse"](raw.strip())
            except ValueError as err:
                shown = redact_url(raw.strip()) if (name, key) == ("redis", "url") else raw.strip()
                raise ConfigError(f"{where}: [{name}] {key} = {shown!r}: {err}") from None
        sections[name] = section_class(**values)
    config = Config(path=path, lines=tuple(lines.items()), **sections)
    _check_consistency(config)
    return config


def _check_redis(redis_section: RedisSection, where: Callable[[str], str]) -> None:
    """Sentinel and Cluster keys that only make sense together; WHERE(key) names the line."""
    if redis_section.sentinels and redis_section.cluster:
        raise ConfigError(f"{where('cluster')}: [redis] sentinels and cluster are both set; "
                          "a Redis is managed by Sentinel or is a Cluster, not both")
    if bool(redis_section.sentinels) != bool(redis_section.service_name):
        key = "sentinels" if redis_section.sentinels else "service_name"
        raise ConfigError(f"{where(key)}: [redis] sentinels and service_name go together "
                          "(the sentinels to ask, and the service they manage)")
    if redis_section.read_from_replicas and not redis_section.sentinels:
        raise ConfigError(f"{where('read_from_replicas')}: [redis] read_from_replicas needs "
                          "sentinels (a Cluster's decisions read its primaries)")
    if redis_section.sentinel_password_file and not redis_section.sentinels:
        raise ConfigError(f"{where('sentinel_password_file')}: [redis] sentinel_password_file "
                          "needs sentinels")
    if redis_section.cluster:
        from redis.connection import parse_url
        if not redis_section.url.startswith(("redis://", "rediss://")) \
                or parse_url(redis_section.url).get("db", 0) != 0:
            raise ConfigError(f"{where('url')}: [redis] with cluster set, url must be redis:// or "
                              "rediss:// with database 0 (a Redis Cluster has no other)")


def _check_consistency(config: Config) -> None:
    if config.redis.password_file and url_password(config.redis.url):
        raise ConfigError(f"{config.path}: [redis] password_file is set and url carries a "
                          "password too; keep it in one place (the file)")
    _check_redis(config.redis, lambda key: config.where("redis", key).rstrip(": "))
    if config.dns.timeout > config.dns.budget:
        raise ConfigError(f"{config.path}: [dns] timeout ({config.dns.timeout}) must not exceed "
                          f"budget ({config.dns.budget})")
    if (config.greenlist.registrar or config.greenlist.rdap) and not config.rdap.enabled:
        raise ConfigError(f"{config.path}: [greenlist] registrar and rdap need RDAP lookups: "
                          "set [rdap] enabled = yes")
    if config.report.fingerprint_days > config.report.retention_days:
        raise ConfigError(f"{config.path}: [report] fingerprint_days ({config.report.fingerprint_days}) "
                          f"must not exceed retention_days ({config.report.retention_days}): a late "
                          "recovery would count into an hour already expired")
    enabled = len(config.greenlist.enabled_signals())
    dnswl = config.dnswl
    enabled += bool((dnswl.zones or dnswl.domain_zones) and dnswl.greenlist_trust <= 3)
    if 0 < enabled < config.greenlist.min_signals:
        raise ConfigError(f"{config.path}: [greenlist] min_signals ({config.greenlist.min_signals}) "
                          f"exceeds the {enabled} signals switched on; nothing could be greenlisted")


def refuse_world_writable(path: str, handle) -> None:
    """Like OpenDKIM with its keys: a file any user may change is not trusted."""
    if os.fstat(handle.fileno()).st_mode & stat.S_IWOTH:
        raise ConfigError(f"{path}: writable by every user; refusing it "
                          f"(chmod o-w {path})")


def keep_restart_sections(running: Config, new: Config) -> tuple[Config, list]:
    """What a reload runs: NEW with RUNNING's RESTART_SECTIONS; and the sections whose
    change in NEW waits for a restart."""
    changed = [name for name in RESTART_SECTIONS if getattr(new, name) != getattr(running, name)]
    return dataclasses.replace(new, **{name: getattr(running, name) for name in RESTART_SECTIONS}), \
        changed


def load_config(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as handle:
            refuse_world_writable(path, handle)
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    return parse_config(text, path)


def describe_keys() -> list:
    """(section, key, default) for every key, for documentation and tests."""
    rows = []
    for name, section_class in SECTIONS.items():
        for f in dataclasses.fields(section_class):
            rows.append((name, f.name, f.metadata["default"]))
    return rows
