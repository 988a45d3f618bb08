"""A private Prometheus (Debian's ``prometheus``) scraping given targets every second.

    with PrometheusServer(tmp_path, ["127.0.0.1:9169"]) as prom:
        prom.wait_value('sum(mx6milter_decisions_total)', 3.0)
        prom.query('mx6milter_decisions_total')   # the API's "data" object

Its own config, storage directory and free port; not the system service.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Self

from servers import free_port, stop_process, wait_for


class PrometheusServer:
    def __init__(self, directory: Path, targets: list):
        self.dir = Path(directory)
        self.targets = targets
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: mx6milter\n    static_configs:\n"
            f"      - targets: {json.dumps(self.targets)}\n")
        log = open(self.dir / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._ready, timeout=60, interval=0.2, what=f"prometheus on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited {self.process.returncode}: "
                               + (self.dir / "prometheus.log").read_text(errors="replace"))
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> dict:
        """GET /api/v1/PATH; the answer's "data", or AssertionError with Prometheus' error."""
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as err:
            answer = json.load(err)
        assert answer.get("status") == "success", (params, answer)
        return answer["data"]

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def samples(self, expr: str, *labels: str) -> dict:
        """An instant vector as {(label values...): value}."""
        return {tuple(item["metric"].get(name, "") for name in labels): float(item["value"][1])
                for item in self.query(expr)["result"]}

    def wait_samples(self, expr: str, labels: tuple, expected: dict, timeout: float = 60) -> dict:
        """Wait until EXPR's samples equal EXPECTED (the scrapes catch up); the last seen."""
        seen: dict = {}

        def equal() -> bool:
            seen.clear()
            seen.update(self.samples(expr, *labels))
            return seen == expected
        try:
            wait_for(equal, timeout=timeout, interval=0.5, what=f"{expr} == {expected}")
        except TimeoutError:
            pass          # the caller's assertion shows what was there instead
        return dict(seen)

    def stop(self) -> None:
        stop_process(self.process, timeout=30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
