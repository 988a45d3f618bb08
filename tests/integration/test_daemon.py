"""The real daemon: starts on its socket, answers, stops on SIGTERM within seconds."""
import signal
import subprocess
import time
from pathlib import Path


from servers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
MX6MILTER = str(ROOT / ".venv" / "bin" / "mx6milter")


def start_daemon(tmp_path, socket_spec, redis_url, extra=""):
    conf = tmp_path / "mx6milter.conf"
    conf.write_text(f"[milter]\nsocket = {socket_spec}\n[redis]\nurl = {redis_url}\n"
                    f"[dns]\nnameservers = 127.0.0.1:9\ntimeout = 0.2\nbudget = 0.5\n{extra}")
    log = open(tmp_path / "daemon.log", "w")
    process = subprocess.Popen([MX6MILTER, "-c", str(conf)], stdout=log, stderr=log)
    return process, tmp_path / "daemon.log"


def stop_and_wait(process, seconds=5):
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = process.wait(timeout=seconds)
    return code, time.monotonic() - started


def test_unix_socket_start_and_sigterm(tmp_path, redis_url):
    path = tmp_path / "m.sock"
    process, log = start_daemon(tmp_path, f"unix:{path}", redis_url)
    try:
        wait_for(path.exists, what="milter socket")
        assert oct(path.stat().st_mode & 0o777) == "0o660"
    finally:
        code, took = stop_and_wait(process)
    assert code == 0
    assert took < 5
    text = log.read_text()
    assert "listening on unix:" in text and "stopped" in text


def test_tcp_socket_gets_nodelay(tmp_path, redis_url):
    port = free_port()
    process, log = start_daemon(tmp_path, f"inet:{port}@127.0.0.1", redis_url, "[log]\nlevel = debug\n")
    try:
        wait_for(lambda: "TCP_NODELAY set" in log.read_text(), what="TCP_NODELAY on the listener")
        listening = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True)
        assert f"127.0.0.1:{port}" in listening.stdout
    finally:
        code, _ = stop_and_wait(process)
    assert code == 0


def test_redis_down_at_start_warns_but_runs(tmp_path):
    path = tmp_path / "m.sock"
    process, log = start_daemon(tmp_path, f"unix:{path}", f"redis://127.0.0.1:{free_port()}/0")
    try:
        wait_for(path.exists, what="milter socket")
        wait_for(lambda: "Redis at" in log.read_text(), what="startup warning")
        assert process.poll() is None
    finally:
        stop_and_wait(process)


def test_bad_config_exits_2(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[policy]\nmode = sometimes\n")
    result = subprocess.run([MX6MILTER, "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "bad.conf:2: [policy] mode" in result.stderr
