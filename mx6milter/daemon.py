"""Running the milter: logging, the libmilter socket, signals, reload."""
from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import socket
import stat
import sys
import threading
import time

import Milter
import milter as libmilter

from .config import Config, ConfigError, load_config
from .dns import Resolver
from .evaluate import Evaluator
from .milter import Mx6Milter
from .privileges import drop_privileges, make_socket_dir, own_socket, resolve_identity
from .store import Store

log = logging.getLogger("mx6milter")


def setup_logging(config: Config) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if config.log.destination == "syslog":
        handler = logging.handlers.SysLogHandler(address="/dev/log", facility=config.log.syslog_facility)
        handler.setFormatter(logging.Formatter("mx6milter[%(process)d]: %(levelname)s %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s mx6milter %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(config.log.level.upper())
    logging.getLogger("mx6milter.dkimpy").setLevel(logging.CRITICAL)   # its errors are our results


def read_secret(path: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            secret = handle.read().strip()
    except OSError as err:
        raise ConfigError(f"[addressbook] secret_file: cannot read {path}: {err}") from None
    if len(secret) < 16:
        raise ConfigError(f"[addressbook] secret_file: {path} holds fewer than 16 bytes")
    return secret


def build_evaluator(config: Config) -> Evaluator:
    store = Store.from_config(config.redis, read_secret(config.addressbook.secret_file))
    return Evaluator(config, store, Resolver.from_config(config.dns))


def self_check(evaluator: Evaluator) -> None:
    """Warn, never refuse: the milter must start even when Redis or DNS is down."""
    if not evaluator.store.ping():
        log.warning("startup check: Redis at %s does not answer; IPv6 mail will fall back "
                    "until it does", evaluator.config.redis.url)
    try:
        # Not the root: the resolver answers [] for "." without asking anyone.
        evaluator.resolver.query("org", "NS")
    except Exception as err:
        log.warning("startup check: DNS does not answer (%s); IPv6 mail will fall back "
                    "until it does", err)


class Daemon:
    """libmilter runs in a worker thread; the main thread handles signals."""

    def __init__(self, config: Config):
        self.config = config
        self.evaluator = build_evaluator(config)
        self.stopping = threading.Event()
        self.stop_requested = threading.Event()
        self.abandon_drain = threading.Event()   # a second SIGTERM: stop waiting
        self.error: BaseException | None = None
        self.identity = resolve_identity(config.milter)
        self.sessions = 0                        # milter connections open now
        self.sessions_changed = threading.Condition()

    def new_connection(self) -> Milter.Base:
        with self.sessions_changed:
            self.sessions += 1
        if self.stop_requested.is_set():
            return Refuse()
        return Mx6Milter(self.evaluator)   # read per connection, so a reload takes effect

    def close_connection(self, ctx) -> int:
        counted = ctx.getpriv() is not None
        try:
            return Milter.close_callback(ctx)
        finally:
            if counted:
                with self.sessions_changed:
                    self.sessions -= 1
                    self.sessions_changed.notify_all()

    def reload(self) -> None:
        try:
            config = load_config(self.config.path)
            evaluator = build_evaluator(config)
        except ConfigError as err:
            log.error("reload refused, keeping the running configuration: %s", err)
            return
        except Exception:   # raised in the signal handler it would end the daemon
            log.exception("reload refused, keeping the running configuration")
            return
        if config.milter != self.config.milter:
            log.warning("reload: [milter] changes take effect only after a restart")
        setup_logging(config)
        self.config, self.evaluator = config, evaluator
        log.info("configuration reloaded from %s", config.path)

    def _register(self) -> None:
        Milter.factory = self.new_connection
        libmilter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS)
        # An exception our callbacks cannot catch (pymilter failing to decode a
        # non-UTF-8 HELO before calling us) must not become libmilter's default
        # 451 "Filter failure", which hits IPv4 mail too. IPv6 mail is still judged
        # at end of message, where no such exception can happen (no arguments).
        libmilter.set_exception_policy(Milter.CONTINUE)
        libmilter.set_connect_callback(Milter.connect_callback)
        libmilter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
        libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
        libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
        libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
        libmilter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
        libmilter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
        libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
        libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
        libmilter.set_close_callback(self.close_connection)
        libmilter.setconn(self.config.milter.socket)
        libmilter.settimeout(int(self.config.milter.timeout))
        libmilter.register("mx6milter", negotiate=Milter.negotiate_callback)

    def _prepare_socket(self) -> None:
        spec = self.config.milter.socket
        if spec.startswith(("unix:", "local:")):
            make_socket_dir(spec.split(":", 1)[1], self.identity)
        libmilter.opensocket(True)
        if spec.startswith(("unix:", "local:")):
            own_socket(spec.split(":", 1)[1], self.config.milter.socket_mode, self.identity)
        else:
            set_nodelay_on_listeners()

    def _run_libmilter(self) -> None:
        try:
            libmilter.main()
        except BaseException as err:  # reported by run(); the thread must not die silently
            self.error = err
        finally:
            self.stopping.set()

    def run(self) -> int:
        # Handlers first: a SIGTERM during start-up must still stop us cleanly.
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.reload())
        self._register()
        self._prepare_socket()
        drop_privileges(self.identity)    # bound: from here on no root is needed
        self_check(self.evaluator)
        worker = threading.Thread(target=self._run_libmilter, name="libmilter", daemon=True)
        worker.start()
        log.info("listening on %s, mode %s", self.config.milter.socket, self.config.policy.mode)
        stopper = None
        while not self.stopping.wait(0.2):
            if self.stop_requested.is_set():
                if stopper is None:
                    self._drain()
                    # smfi_stop blocks until the listener's poll returns; wake it.
                    stopper = threading.Thread(target=libmilter.stop, name="stop", daemon=True)
                    stopper.start()
                wake_listener(self.config.milter.socket)
        worker.join(timeout=10)
        if self.error:
            log.error("libmilter stopped: %s", self.error)
            return 1
        log.info("stopped")
        return 0

    def stop(self) -> None:
        if self.stop_requested.is_set():
            log.info("second stop signal: not waiting for sessions in flight")
            self.abandon_drain.set()
            return
        log.info("stopping on signal: no new sessions; %d in flight", self.sessions)
        self.stop_requested.set()

    def _drain(self) -> None:
        """Let sessions in flight finish (up to drain_timeout) before stopping libmilter.

        smfi_stop ends every session at once, so it waits until they are done;
        meanwhile new connections get a tempfail (see Refuse).
        """
        deadline = time.monotonic() + self.config.milter.drain_timeout
        with self.sessions_changed:
            while self.sessions > 0 and not self.abandon_drain.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("drain_timeout: %d sessions still open; the MTA will "
                                "tempfail them", self.sessions)
                    return
                self.sessions_changed.wait(min(left, 0.2))


class Refuse(Milter.Base):
    """A connection arriving while we drain: tempfail it, the MTA keeps the mail."""

    def connect(self, hostname, family, hostaddr):
        return Milter.TEMPFAIL   # the MTA's own 4xx, as if the milter were down


def wake_listener(spec: str) -> None:
    """Connect to our own socket so libmilter's listener notices the stop at once.

    Its poll has a timeout of several seconds, and smfi_stop waits for it.
    """
    kind, _, rest = spec.partition(":")
    try:
        if kind in ("unix", "local"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address = rest
        else:
            port, _, host = rest.partition("@")
            host = host.strip("[]") or ("::1" if kind == "inet6" else "127.0.0.1")
            sock = socket.socket(socket.AF_INET6 if kind == "inet6" else socket.AF_INET,
                                 socket.SOCK_STREAM)
            address = (host, int(port))
        with sock:
            sock.settimeout(1)
            sock.connect(address)
    except OSError:
        pass   # already closed: nothing to wake


def set_nodelay_on_listeners() -> None:
    """TCP_NODELAY on libmilter's listening socket; accepted sockets inherit it.

    Without it Nagle's algorithm and delayed ACKs stall every milter reply on TCP.
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and \
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                log.debug("TCP_NODELAY set on listening fd %d", fd)
        finally:
            sock.close()
