"""Running the milter: logging, the libmilter socket, signals, reload."""
from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import stat
import threading
import time

import Milter
import milter as libmilter

from . import metrics as prometheus
from .config import Config, ConfigError, SocketSpec, keep_restart_sections, load_config
from .logs import setup_logging
from .milter import Mx6Milter
from .privileges import (check_names, drop_privileges, make_socket_dir, own_socket,
                         resolve_identity, warn_if_root)
from .service import build_evaluator, self_check

log = logging.getLogger("mx6milter")

# Sent by the supervisor to its workers; blocked around fork() so none reaches a
# child before it has its own handlers.
FORWARDED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def sd_notify(state: str) -> bool:
    """Tell systemd (Type=notify) STATE, e.g. READY=1, through $NOTIFY_SOCKET; True if sent.

    sd_notify(3): a datagram to the unix socket named by the variable, an
    abstract one if it starts with @. Not under systemd: nothing to do."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError as err:
        log.warning("cannot notify the service manager at %s: %s", address, err)
        return False


class Daemon:
    """libmilter runs in a worker thread; the main thread handles signals."""

    def __init__(self, config: Config):
        self.config = config
        self.metrics = prometheus.Metrics()      # one set for the process, kept across reloads
        self.evaluator = build_evaluator(config, self.metrics)
        self.stopping = threading.Event()
        self.stop_requested = threading.Event()
        self.abandon_drain = threading.Event()   # a second SIGTERM: stop waiting
        self.error: BaseException | None = None
        self.identity = resolve_identity(config)
        self.sessions = 0                        # milter connections open now
        self.sessions_changed = threading.Condition()
        self.forked = False                      # a Supervisor's worker: see _serve
        self.first_stop = 0.0                    # when a worker's first stop signal came

    def new_connection(self) -> Milter.Base:
        with self.sessions_changed:
            self.sessions += 1
        self.metrics.sessions.inc()
        if self.stop_requested.is_set():
            return Refuse()
        return Mx6Milter(self.evaluator)   # read per connection, so a reload takes effect

    def close_connection(self, ctx) -> int:
        counted = ctx.getpriv() is not None
        try:
            return Milter.close_callback(ctx)
        finally:
            if counted:
                self.metrics.sessions.dec()
                with self.sessions_changed:
                    self.sessions -= 1
                    self.sessions_changed.notify_all()

    def reload(self) -> None:
        try:
            config, waiting = keep_restart_sections(self.config, load_config(self.config.path))
            evaluator = build_evaluator(config, self.metrics)
        except ConfigError as err:
            log.error("reload refused, keeping the running configuration: %s", err)
            return
        except Exception:   # raised in the signal handler it would end the daemon
            log.exception("reload refused, keeping the running configuration")
            return
        warn_restart_only(waiting)
        setup_logging(config)
        # One memory budget per process: messages in flight hold bytes of the old one.
        evaluator.memory = self.evaluator.memory
        self.config, self.evaluator = config, evaluator
        log.info("configuration reloaded from %s", config.path)

    def _register(self) -> None:
        register_milter(self.config, self.new_connection, self.close_connection)

    def _prepare_socket(self) -> None:
        prepare_socket(self.config, self.identity)

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.reload())

    def _run_libmilter(self) -> None:
        try:
            libmilter.main()
        except BaseException as err:  # reported by run(); the thread must not die silently
            self.error = err
        finally:
            self.stopping.set()

    def run(self) -> int:
        # Handlers first: a SIGTERM during start-up must still stop us cleanly.
        self._install_signal_handlers()
        self._register()
        self._prepare_socket()
        if self.config.metrics.listen:
            prometheus.serve(self.config.metrics.listen, self.metrics.registry)
        drop_privileges(self.identity)    # bound: from here on no root is needed
        warn_if_root()
        return self._serve()

    def run_forked(self) -> int:
        """One worker of a Supervisor. The parent bound the socket, registered the
        filter and dropped privileges before forking; only our callbacks change."""
        self.forked = True
        self._install_signal_handlers()
        signal.signal(signal.SIGTERM, lambda *_: self._stop_forked())
        signal.signal(signal.SIGINT, lambda *_: self._stop_forked())
        signal.signal(signal.SIGUSR1, lambda *_: None)   # only to interrupt the listener's poll
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)   # blocked by the parent for the fork
        Milter.factory = self.new_connection
        libmilter.set_close_callback(self.close_connection)
        return self._serve()

    def _serve(self) -> int:
        self_check(self.evaluator)
        worker = threading.Thread(target=self._run_libmilter, name="libmilter", daemon=True)
        worker.start()
        log.info("listening on %s, mode %s", self.config.milter.socket, self.config.policy.mode)
        if not self.forked:
            sd_notify("READY=1")
        stopper = None
        while not self.stopping.wait(0.2):
            if self.stop_requested.is_set():
                if stopper is None:
                    self._drain()
                    # smfi_stop blocks until the listener's poll returns; wake it.
                    stopper = threading.Thread(target=libmilter.stop, name="stop", daemon=True)
                    stopper.start()
                if self.forked:
                    # The first worker to stop may unlink the shared socket, so
                    # connecting cannot wake us: a signal makes poll() return EINTR.
                    signal.pthread_kill(worker.ident, signal.SIGUSR1)
                else:
                    wake_listener(self.config.milter.socket)
        worker.join(timeout=10)
        journal = self.evaluator.journal
        if journal is not None and not journal.flush(timeout=5):
            log.warning("journal: records still queued at stop were not written")
        if self.error:
            log.error("libmilter stopped: %s", self.error)
            return 1
        log.info("stopped")
        return 0

    def _stop_forked(self) -> None:
        """A stop signal reaches a worker twice at once: forwarded by the supervisor, and
        straight from systemd (KillMode=control-group) or a terminal's Ctrl-C. Only a
        signal a second or more after the first counts as the second one."""
        now = time.monotonic()
        if self.stop_requested.is_set() and now - self.first_stop < 1.0:
            return
        if not self.stop_requested.is_set():
            self.first_stop = now
        self.stop()

    def stop(self) -> None:
        if self.stop_requested.is_set():
            log.info("second stop signal: not waiting for sessions in flight")
            self.abandon_drain.set()
            return
        log.info("stopping on signal: no new sessions; %d in flight", self.sessions)
        if not self.forked:
            sd_notify("STOPPING=1")
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


def warn_restart_only(sections: list) -> None:
    for section in sections:
        log.warning("reload: [%s] changes take effect only after a restart", section)


def register_milter(config: Config, factory, close_connection) -> None:
    """Register the filter with libmilter: the same in one process and in a Supervisor."""
    Milter.factory = factory
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
    libmilter.set_close_callback(close_connection)
    libmilter.setconn(str(config.milter.socket))
    libmilter.settimeout(int(config.milter.timeout))
    libmilter.register("mx6milter", negotiate=Milter.negotiate_callback)


def prepare_socket(config: Config, identity) -> None:
    """Bind the listening socket, give it its mode and owner (root may be needed)."""
    spec = config.milter.socket
    if spec.is_unix:
        make_socket_dir(spec.path, identity)
    libmilter.opensocket(True)
    if spec.is_unix:
        own_socket(spec.path, config.milter.socket_mode, identity)
    else:
        set_nodelay_on_listeners()


class Supervisor:
    """[milter] processes > 1: bind once, fork that many workers, watch them.

    One Python process decides on one core at most (the GIL); workers that each
    run libmilter on the inherited listening socket use them all, and the kernel
    gives each connection to one of them. The parent only binds, forwards
    signals and replaces workers that die; it never builds the Evaluator used
    for mail, so no Redis connection, resolver cache or thread crosses a fork.
    """

    RESTART_DELAY = (1.0, 60.0)   # first and largest pause before restarting a worker that died young
    YOUNG = 10.0                  # seconds: a worker that dies earlier counts towards the back-off

    def __init__(self, config: Config):
        build_evaluator(config)   # refuse a bad secret_file now, as a single process does
        self.config = config
        self.identity = resolve_identity(config)
        self.workers: dict = {}         # pid -> (slot, started at)
        self.restart_at: dict = {}      # slot -> monotonic time it may be forked again
        self.failures: dict = {}        # slot -> deaths in a row of young workers
        self.stop_signals = 0
        self.reload_requested = False
        self.metrics_dir = ""           # the workers' metric files, this run's (metrics.py)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        register_milter(self.config, Refuse, Milter.close_callback)   # each worker sets its own
        prepare_socket(self.config, self.identity)
        set_listeners_nonblocking()
        socket_id = socket_file_id(self.config.milter.socket)
        if self.config.metrics.listen:
            self.metrics_dir = prometheus.enable_multiprocess(self.identity.uid, self.identity.gid)
            prometheus.serve(self.config.metrics.listen,
                             prometheus.multiprocess_registry(self.metrics_dir))
        drop_privileges(self.identity)
        warn_if_root()
        try:
            return self._supervise(socket_id)
        finally:
            if self.metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _supervise(self, socket_id) -> int:
        for slot in range(self.config.milter.processes):
            self._fork(slot)
        log.info("listening on %s, mode %s, %d worker processes", self.config.milter.socket,
                 self.config.policy.mode, self.config.milter.processes)
        sd_notify("READY=1")
        forwarded, status = 0, 0
        while self.stop_signals == 0:
            current = socket_file_id(self.config.milter.socket)
            if socket_id and current != () and current != socket_id:
                # libmilter removes the socket file when a worker's listener ends on its
                # own; the others would then serve a socket no MTA can reach.
                log.error("the socket file of %s is gone or replaced; stopping, so that "
                          "the service manager starts us afresh", self.config.milter.socket)
                status = 1
                self.stop_signals = 1
                break
            if self.reload_requested:
                self.reload_requested = False
                self._reload()
            self._reap(stopping=False)
            now = time.monotonic()
            for slot, due in list(self.restart_at.items()):
                if now >= due:
                    del self.restart_at[slot]
                    self._fork(slot)
            time.sleep(0.2)   # a signal cuts it short
        deadline = time.monotonic() + self.config.milter.drain_timeout + 15
        sd_notify("STOPPING=1")
        log.info("stopping: signalling %d workers", len(self.workers))
        while self.workers:
            if forwarded < self.stop_signals:   # a second signal: workers stop waiting too
                forwarded = self.stop_signals
                self._signal_all(signal.SIGTERM)
            if time.monotonic() > deadline:
                log.error("workers %s still running past drain_timeout; killing them",
                          sorted(self.workers))
                self._signal_all(signal.SIGKILL)
                deadline = float("inf")
            self._reap(stopping=True)
            time.sleep(0.1)
        log.info("stopped")
        return status

    def _on_stop(self, *_) -> None:
        self.stop_signals += 1

    def _on_reload(self, *_) -> None:
        self.reload_requested = True

    def _fork(self, slot: int) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            pid = os.fork()
        except OSError as err:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            log.error("cannot start worker %d: %s", slot, err)
            self._schedule_restart(slot, young=True)
            return
        if pid == 0:
            os._exit(self._worker_main())   # never returns into the parent's loop
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        self.workers[pid] = (slot, time.monotonic())
        log.info("worker %d started, pid %d", slot, pid)

    def _worker_main(self) -> int:
        try:
            die_with_parent()
            for handler in logging.getLogger().handlers:
                handler.close()   # the parent's syslog socket stays the parent's
            setup_logging(self.config)
            return Daemon(self.config).run_forked()
        except BaseException:   # whatever it is, the parent logs the exit and restarts us
            log.exception("worker failed")
            return 1

    def _reap(self, stopping: bool) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            if pid not in self.workers:
                continue
            slot, started = self.workers.pop(pid)
            if self.metrics_dir:
                prometheus.worker_gone(self.metrics_dir, pid)
            if stopping:
                log.info("worker %d (pid %d) exited: %s", slot, pid, describe_status(status))
                continue
            young = time.monotonic() - started < self.YOUNG
            delay = self._schedule_restart(slot, young)
            log.error("worker %d (pid %d) died: %s; restarting it in %.0f s", slot, pid,
                      describe_status(status), delay)

    def _schedule_restart(self, slot: int, young: bool) -> float:
        """Back off exponentially while a worker keeps dying young, so a crash loop does not spin."""
        failures = self.failures.get(slot, 0) + 1 if young else 0
        self.failures[slot] = failures
        first, largest = self.RESTART_DELAY
        delay = 0.0 if failures == 0 else min(largest, first * 2 ** (failures - 1))
        self.restart_at[slot] = time.monotonic() + delay
        return delay

    def _reload(self) -> None:
        """Validate here, so a bad file is refused once and no worker is asked to load it."""
        try:
            config = load_config(self.config.path)
            check_names(config)
            build_evaluator(config)
        except ConfigError as err:
            log.error("reload refused, keeping the running configuration: %s", err)
            return
        except Exception:
            log.exception("reload refused, keeping the running configuration")
            return
        # Workers forked from now on read the new file; the socket stays as bound.
        self.config, waiting = keep_restart_sections(self.config, config)
        warn_restart_only(waiting)
        setup_logging(self.config)
        log.info("configuration %s is valid: reloading %d workers", config.path, len(self.workers))
        self._signal_all(signal.SIGHUP)

    def _signal_all(self, signum: int) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass   # reaped on the next round


def socket_file_id(spec: SocketSpec):
    """(device, inode) of a unix socket's file, None if it is gone, () for TCP or unknown."""
    if not spec.is_unix:
        return ()
    try:
        info = os.stat(spec.path)
    except FileNotFoundError:
        return None
    except OSError:
        return ()   # not ours to judge (e.g. a directory we may no longer search)
    return (info.st_dev, info.st_ino)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def die_with_parent() -> None:
    """A worker whose supervisor is gone (kill -9) must not keep the socket alone."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:   # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def set_listeners_nonblocking() -> None:
    """O_NONBLOCK on the listening socket the workers share.

    Every worker polls it; when a connection arrives all wake and one wins the
    accept(). With a blocking socket the others would sleep in accept() and not
    notice a stop; non-blocking, they get EAGAIN, which libmilter ignores.
    Accepted sockets do not inherit the flag on Linux.
    """
    for fd in listening_sockets():
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


def listening_sockets() -> list:
    """Our file descriptors that are listening sockets (libmilter's, after opensocket)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                found.append(fd)
        finally:
            sock.close()
    return found


class Refuse(Milter.Base):
    """A connection arriving while we drain: tempfail it, the MTA keeps the mail."""

    def connect(self, hostname, family, hostaddr):
        return Milter.TEMPFAIL   # the MTA's own 4xx, as if the milter were down


def wake_listener(spec: SocketSpec) -> None:
    """Connect to our own socket so libmilter's listener notices the stop at once.

    Its poll has a timeout of several seconds, and smfi_stop waits for it.
    """
    try:
        if spec.is_unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address = spec.path
        else:
            sock = socket.socket(socket.AF_INET6 if spec.kind == "inet6" else socket.AF_INET,
                                 socket.SOCK_STREAM)
            address = (spec.host, spec.port)
        with sock:
            sock.settimeout(1)
            sock.connect(address)
    except OSError:
        pass   # already closed: nothing to wake


def set_nodelay_on_listeners() -> None:
    """TCP_NODELAY on libmilter's listening socket; accepted sockets inherit it.

    Without it Nagle's algorithm and delayed ACKs stall every milter reply on TCP.
    """
    for fd in listening_sockets():
        with socket.socket(fileno=os.dup(fd)) as sock:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                log.debug("TCP_NODELAY set on listening fd %d", fd)
