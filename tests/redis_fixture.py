"""A real redis-server on a free loopback port, for the shipping tests.

Loaded through ``pytest_plugins``; also imported by the benchmarks.
`RedisCluster` / ``redis_cluster``: three such servers as a Redis Cluster. The
server keeps an append-only file with fsync on every write, so a test can
stop it (SIGTERM, a clean shutdown) and start it again on the same port
with its data back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ports import free_port


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
        self.exe = exe
        self.workdir = workdir
        self.port = port or free_port()
        # A port we picked may be taken by another process (free_port only
        # saw it free a moment ago): then we pick again, once per attempt.
        self.port_is_ours_to_pick = port is None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, extra: list[str] | None = None) -> None:
        for _ in range(5):
            if self._start_once(extra):
                return
            if not self.port_is_ours_to_pick:
                break
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _start_once(self, extra: list[str] | None) -> bool:
        """True once our own redis-server answers on the port (not another
        process's: two test runs at once may pick one free port)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.exe, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.workdir), "--save", "", "--appendonly", "yes",
                "--appendfsync", "always", "--daemonize", "no", "--loglevel", "warning",
                *(extra or []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"INFO server\r\n")
                    reply = s.recv(65536)
                    if f"process_id:{self.proc.pid}\r".encode() in reply:
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown; what it acknowledged is in the fsynced AOF."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisCluster:
    """Three ``redis-server`` masters with ``--cluster-enabled yes`` on free
    loopback ports (cluster bus ports free too), slots split in thirds,
    joined with CLUSTER MEET; `start` returns once every node reports
    ``cluster_state:ok`` and the same three-range slot map."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.servers = [RedisServer(workdir / f"node{i}") for i in range(masters)]
        version = subprocess.run([self.servers[0].exe, "--version"], capture_output=True,
                                 text=True).stdout.split("v=")[-1].split(".")[0]
        if not version.isdigit() or int(version) < 7:
            pytest.skip("Redis Cluster tests need redis-server 7 or later (--cluster-port)")
        self.bus_ports = [free_port() for _ in self.servers]

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def url(self) -> str:
        """The collector's URL for this cluster (one seed is enough)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def _start_server(self, i: int) -> None:
        # Each node keeps the fixture's fsynced append-only file, so a
        # killed master comes back with what it acknowledged.
        self.servers[i].start(["--cluster-enabled", "yes", "--cluster-port",
                               str(self.bus_ports[i]), "--cluster-config-file", "nodes.conf"])

    def restart(self, i: int) -> None:
        """Starts master ``i`` again (after `RedisServer.kill`/`stop`) and
        waits until the whole cluster reports ``cluster_state:ok``."""
        self._start_server(i)
        self._wait_ok()

    def _wait_ok(self) -> None:
        import redis

        clients = [redis.Redis(port=p, decode_responses=True) for p in self.ports]
        n = len(clients)
        deadline = time.monotonic() + 30
        while True:
            infos = [c.execute_command("CLUSTER", "INFO") for c in clients]
            maps = [c.execute_command("CLUSTER", "SLOTS") for c in clients]
            if all("cluster_state:ok" in i for i in infos) and all(len(m) == n for m in maps):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis cluster did not form: {infos}")
            time.sleep(0.05)
        for c in clients:
            c.close()

    def start(self) -> None:
        import redis

        for i in range(len(self.servers)):
            self._start_server(i)
        clients = [redis.Redis(port=p, decode_responses=True) for p in self.ports]
        n = len(clients)
        for i, c in enumerate(clients):
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * 16384 // n, (i + 1) * 16384 // n - 1)
        for p, bus in zip(self.ports[1:], self.bus_ports[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", p, bus)
        for c in clients:
            c.close()
        self._wait_ok()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def client(self):  # type: ignore[no-untyped-def]
        """redis-py's cluster client."""
        from redis.cluster import RedisCluster as Client

        return Client(host="127.0.0.1", port=self.ports[0], decode_responses=True)

    def node(self, port: int):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(port=port, decode_responses=True)


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
