"""mx6ctl transport-map: a Postfix socketmap service that routes MX6 domains to ``mx6ctl send``.

    transport_maps = socketmap:unix:/run/mx6milter/transport.sock:mx6

answers ``OK mx6:`` for a domain publishing ``SRV _mx6._tcp`` and NOTFOUND
otherwise (mx6milter.outbound.socketmap); contrib/postfix/mx6-aware.cf has the
pipe(8) service that the ``mx6:`` transport names.
"""
from __future__ import annotations

import os
import socket
import socketserver
import sys
import threading
import time
from typing import cast

from ..outbound.socketmap import NetstringError, answer, netstring, parse_netstring
from .common import UsageError
from .mx6 import _add_dns_options, _setup

IDLE_TIMEOUT = 300.0      # Postfix keeps a socketmap connection open while it is busy
MAX_CONNECTIONS = 100     # Postfix's default_process_limit: one connection a busy process


class _Service(socketserver.ThreadingMixIn):
    """One thread a Postfix connection, at most max_connections at once (a flood of
    connections must not become a flood of threads); what every request is answered from."""
    daemon_threads = True
    resolver = None
    map_name = "mx6"
    transport = "mx6:"
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)    # replaced per server by _server()
    refused = 0
    refusal_logged_at = float("-inf")

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            # Closed at once: Postfix reports the table as unavailable and defers, then retries.
            self.refused += 1
            if time.monotonic() - self.refusal_logged_at >= 60:     # a flood: a line a minute
                self.refusal_logged_at = time.monotonic()
                print(f"mx6ctl transport-map: too many connections; {self.refused} refused so far",
                      file=sys.stderr, flush=True)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:          # no thread started: its slot is not taken
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = cast(_Service, self.server)
        self.request.settimeout(IDLE_TIMEOUT)
        buffer = b""
        try:
            while True:
                parsed = parse_netstring(buffer)
                if parsed is None:
                    chunk = self.request.recv(4096)
                    if not chunk:
                        return
                    buffer += chunk
                    continue
                request, buffer = parsed
                reply = answer(server.resolver, request, server.map_name, server.transport)
                self.request.sendall(netstring(reply))
        except NetstringError as err:
            # Not Postfix speaking, or a broken request: say so once and hang up.
            print(f"mx6ctl transport-map: {err}; connection closed", file=sys.stderr, flush=True)
        except OSError:
            return


class _UnixServer(_Service, socketserver.UnixStreamServer):
    pass


class _TcpServer(_Service, socketserver.TCPServer):
    allow_reuse_address = True


def _server(listen: str) -> _Service:
    kind, _, where = listen.partition(":")
    if kind == "unix" and where.startswith("/"):
        if os.path.exists(where):
            os.unlink(where)
        server = _UnixServer(where, _Handler)
        os.chmod(where, 0o666)
        return server
    host, _, port = where.rpartition(":")
    if kind == "inet" and host and port.isdigit() and 0 < int(port) < 65536:
        _TcpServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return _TcpServer((host.strip("[]"), int(port)), _Handler)
    raise UsageError(f"--listen {listen!r}: expected unix:/PATH or inet:HOST:PORT")


def cmd_transport_map(args) -> int:
    if not args.map_name.isidentifier():
        raise UsageError(f"--map-name {args.map_name!r}: expected a word such as mx6")
    if ":" not in args.transport or any(c.isspace() for c in args.transport):
        raise UsageError(f"--transport {args.transport!r}: expected TRANSPORT:[NEXTHOP] such as mx6:")
    resolver, _, _ = _setup(args)
    if args.max_connections < 1:
        raise UsageError(f"--max-connections {args.max_connections}: expected at least 1")
    server = _server(args.listen)
    server.resolver, server.map_name, server.transport = resolver, args.map_name, args.transport
    server.slots = threading.BoundedSemaphore(args.max_connections)
    print(f"mx6ctl transport-map: serving {args.map_name} on {args.listen}", file=sys.stderr, flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "transport-map", help="serve Postfix a transport map: mx6: for domains publishing MX6",
        description="A Postfix socketmap service (transport_maps = socketmap:unix:PATH:mx6): "
                    "answers OK TRANSPORT for a domain with an SRV _mx6._tcp record (through the "
                    "resolver, cached for its TTL), NOTFOUND for others and for addresses, TEMP "
                    "when the lookup failed (Postfix defers). Runs until killed.",
        examples=["mx6ctl transport-map --listen inet:127.0.0.1:10026",
                  "mx6ctl transport-map --listen unix:/run/mx6milter/transport.sock --nameserver ::1"])
    p.add_argument("--listen", required=True, metavar="unix:/PATH|inet:HOST:PORT",
                   help="where Postfix connects (the socketmap: table's address)")
    p.add_argument("--map-name", default="mx6", help="the NAME in socketmap:...:NAME (default mx6)")
    p.add_argument("--transport", default="mx6:",
                   help="the answer for MX6 domains: master.cf service and next hop (default mx6:)")
    p.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS, metavar="N",
                   help=f"connections served at once; one more is closed at once, and Postfix "
                        f"defers and retries (default {MAX_CONNECTIONS})")
    _add_dns_options(p)
    p.set_defaults(func=cmd_transport_map)
