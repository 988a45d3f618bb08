"""A real HTTP server on loopback serving RDAP answers, for the RDAP tests.

    with RdapServer() as server:
        server.route("/domain/partner.example", body=json_bytes)
        server.route("/domain/slow.example", hold=True)      # answers when released
        server.route("/domain/busy.example", status=429, headers={"Retry-After": "120"})
        server.write_bootstrap(tmp_path)  -> (dns.json path, ipv6.json path)

Every request is counted per path (``server.requests``). Unknown paths get 404.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self


class RdapServer:
    def __init__(self):
        self.routes: dict = {}
        self.requests: dict = {}
        self.release = threading.Event()      # lets held answers go
        self.arrived = threading.Event()      # a held request has arrived
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                status, headers, body, hold = server.routes.get(self.path, (404, {}, b"", False))
                if hold:
                    server.arrived.set()
                    server.release.wait(60)
                self.send_response(status)
                self.send_header("Content-Type", "application/rdap+json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def route(self, path: str, body: bytes = b"", status: int = 200, headers=None,
              hold: bool = False) -> None:
        self.routes[path] = (status, headers or {}, body, hold)

    def write_bootstrap(self, directory: Path, tlds=("example",),
                        networks=("2001:db8::/32",)) -> tuple:
        dns = directory / "dns.json"
        ipv6 = directory / "ipv6.json"
        dns.write_text(json.dumps({"version": "1.0", "services": [[list(tlds), [self.base]]]}))
        ipv6.write_text(json.dumps({"version": "1.0",
                                    "services": [[list(networks), [self.base]]]}))
        return dns, ipv6

    def start(self) -> Self:
        self.thread.start()
        return self

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
