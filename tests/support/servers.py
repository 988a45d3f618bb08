"""Real servers the tests start: redis-server on a free port (more join later)."""
from __future__ import annotations

import collections
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time

import redis
import redis.connection


def free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def stop_process(process, timeout: float) -> None:
    """SIGTERM a server the tests started, SIGKILL it if it has not gone within TIMEOUT."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


class RedisServer:
    """A private redis-server on loopback; stop() and start() simulate an outage."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mx6-redis-")
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            return self.client().ping()
        except redis.exceptions.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class CountingConnection(redis.Connection):
    """Counts how often the client writes to Redis: one write per round trip."""
    writes = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.writes += 1
        return super().send_packed_command(command, check_health)


def _redis_binary() -> str:
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def free_cluster_port() -> int:
    """A free port a Cluster node can take: at most 55535, its bus (port + 10000) free too."""
    for _ in range(200):
        with socket.socket() as low, socket.socket() as bus:
            low.bind(("127.0.0.1", 0))
            port = low.getsockname()[1]
            if port > 55535:
                continue
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port at or below 55535 with a free bus port")


class RedisNode(RedisServer):
    """A redis-server with extra options (a replica's replicaof, a Cluster node's settings)."""

    def __init__(self, *options: str, port: int | None = None, password: str | None = None):
        super().__init__()
        self.port = port or self.port
        self.password = password
        self.options = list(options)
        if password:
            self.options += ["--requirepass", password, "--masterauth", password]

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           decode_responses=True)

    def start(self) -> RedisNode:
        self.process = subprocess.Popen(
            [_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", *self.options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, what=f"redis-server on port {self.port}")
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to replicas or sentinels."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class SentinelSet:
    """A primary, a replica and three sentinels (down-after-milliseconds 1000: a
    killed primary's replica is promoted in about 4 s here). ``sentinels`` is the
    [redis] sentinels value, ``service`` the service_name."""

    service = "mx6test"

    def __init__(self, password: str | None = None, sentinel_password: str | None = None):
        """PASSWORD: the data nodes' requirepass; SENTINEL_PASSWORD: the sentinels' own."""
        self.password, self.sentinel_password = password, sentinel_password
        self.primary = RedisNode(password=password)
        self.replica = RedisNode("--replicaof", "127.0.0.1", str(self.primary.port),
                                 password=password)
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinel_procs: list = []
        self.dir = tempfile.mkdtemp(prefix="mx6-sentinel-")

    @property
    def sentinels(self) -> str:
        return " ".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica.start()
        wait_for(lambda: self.replica.client().info("replication").get("master_link_status") == "up",
                 what="the replica to sync")
        for index, port in enumerate(self.sentinel_ports):
            conf = f"{self.dir}/sentinel{index}.conf"
            with open(conf, "w") as handle:
                handle.write(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                             f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                             f"sentinel down-after-milliseconds {self.service} 1000\n"
                             f"sentinel failover-timeout {self.service} 10000\n"
                             + (f"sentinel auth-pass {self.service} {self.password}\n"
                                if self.password else "")
                             + (f"requirepass {self.sentinel_password}\n"
                                if self.sentinel_password else ""))
            self.sentinel_procs.append(subprocess.Popen(
                [_redis_binary(), conf, "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.sentinel_ports:
            wait_for(lambda port=port: self._sentinel_sees_replica(port),
                     what=f"sentinel on port {port} to see the replica")
        return self

    def _sentinel_sees_replica(self, port: int) -> bool:
        try:
            return bool(self._sentinel(port).sentinel_slaves(self.service))
        except redis.exceptions.RedisError:
            return False

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=self.sentinel_password,
                           decode_responses=True)

    def current_primary_port(self) -> int:
        return int(self._sentinel(self.sentinel_ports[0])
                   .sentinel_get_master_addr_by_name(self.service)[1])

    def kill_primary(self) -> RedisNode:
        """Kill the node that is primary now; returns it (start() brings it back as a replica)."""
        node = self.primary if self.current_primary_port() == self.primary.port else self.replica
        node.kill()
        return node

    def close(self) -> None:
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        self.primary.close()
        self.replica.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterSet:
    """Three Cluster primaries made one by ``redis-cli --cluster create``, each with
    REPLICAS replicas of its own (cluster-node-timeout 2000 ms: a killed primary's
    replica is promoted in a few seconds); ``seeds`` is the [redis] cluster value,
    the primaries' addresses as created."""

    def __init__(self, size: int = 3, replicas: int = 0):
        self.size, self.replicas = size, replicas
        self.nodes = []
        for _ in range(size * (1 + replicas)):
            port = free_cluster_port()
            self.nodes.append(RedisNode("--cluster-enabled", "yes", "--cluster-config-file",
                                        f"nodes-{port}.conf", "--cluster-node-timeout", "2000",
                                        port=port))

    @property
    def seeds(self) -> str:
        # redis-cli makes the first SIZE nodes the primaries
        return " ".join(f"127.0.0.1:{node.port}" for node in self.nodes[:self.size])

    def start(self) -> RedisClusterSet:
        for node in self.nodes:
            node.start()
        subprocess.run(["redis-cli", "--cluster", "create",
                        *(f"127.0.0.1:{node.port}" for node in self.nodes),
                        "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        wait_for(self._ok, what="the cluster to be ok")
        if self.replicas:
            wait_for(self._replicas_linked, timeout=30, what="the replicas to sync")
        return self

    def _live(self) -> list:
        return [node for node in self.nodes if node.process is not None]

    def _ok(self) -> bool:
        return all("cluster_state:ok" in node.client().execute_command("CLUSTER", "INFO")
                   for node in self._live())

    def _replicas_linked(self) -> bool:
        roles = [node.client().info("replication") for node in self._live()]
        return all(role.get("master_link_status") == "up"
                   for role in roles if role["role"] == "slave")

    def node(self, port: int) -> RedisNode:
        return next(node for node in self.nodes if node.port == port)

    def primary_of(self, key: str) -> RedisNode:
        """The node serving KEY's slot now, as the live nodes' slot table says."""
        asker = self._live()[0].client()
        slot = asker.execute_command("CLUSTER", "KEYSLOT", key)
        for low, high, primary, *_ in asker.execute_command("CLUSTER", "SLOTS"):
            if low <= slot <= high:
                return self.node(int(primary[1]))
        raise LookupError(f"slot {slot} is not served")

    def replicas_of(self, primary: RedisNode) -> list:
        """PRIMARY's replicas, as it lists them itself."""
        info = primary.client().info("replication")
        return [self.node(int(info[f"slave{n}"]["port"]))
                for n in range(int(info["connected_slaves"]))]

    def wait_replicated(self) -> None:
        """Until every replica has applied all its primary had written when called."""
        for node in self._live():
            info = node.client().info("replication")
            if info["role"] != "master":
                continue
            target = info["master_repl_offset"]
            for replica in self.replicas_of(node):
                wait_for(lambda replica=replica, target=target: replica.client().info("replication")
                         ["slave_repl_offset"] >= target, what=f"replica {replica.port} to catch up")

    def client(self):
        from redis.cluster import ClusterNode, RedisCluster
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self._live()],
                            decode_responses=True)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@contextlib.contextmanager
def count_round_trips():
    """Count what redis-py sends, per server port: one send is one round trip (a pipeline
    sends all its commands at once, a Cluster pipeline once per node). Yields a Counter."""
    sent: collections.Counter = collections.Counter()
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(connection, command, check_health=True):
        sent[connection.port] += 1
        return original(connection, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counting
    try:
        yield sent
    finally:
        redis.connection.AbstractConnection.send_packed_command = original
