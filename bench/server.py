"""Start a uvicorn server (leitstand as the README does, or the floor app) on a free loopback
port, wait until every worker is up, and stop it by its process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from . import machine

ROOT = Path(__file__).resolve().parent.parent
# The limiter still runs on every request (it is part of the ingest path), but never says no.
# A per-second window keeps the limiter's moving-window memory bounded at ~1 s of requests.
RATE_LIMIT = "1000000/second"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`uvicorn <target> --workers N` from the repo root; always stopped by its PID."""

    def __init__(
        self, target: str, *, workers: int, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.target = target
        self.workers = workers
        self.port = free_port()
        self.log_path = log_path
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LEITSTAND_") and k != "LOG_LEVEL"}
        env.update(self.env)
        cmd = [sys.executable, "-m", "uvicorn", self.target, "--host", "127.0.0.1",
               "--port", str(self.port), "--no-access-log", "--workers", str(self.workers)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            started = self.log_path.read_text(errors="replace").count(
                "Application startup complete")
            if started >= self.workers and len(self.worker_pids()) == self.workers:
                try:
                    if httpx.get(self.url + "/health", timeout=2.0).status_code < 500:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready within {timeout}s: {self.log_tail()}")

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: uvicorn itself, or its spawned workers."""
        assert self.proc is not None
        if self.workers == 1:
            return [self.proc.pid]
        return [pid for pid in machine.children(self.proc.pid)
                if "spawn_main" in machine.cmdline(pid)]

    def all_pids(self) -> list[int]:
        assert self.proc is not None
        pids = [self.proc.pid]
        pids += [p for p in machine.children(self.proc.pid) if p not in pids]
        return pids

    def cpu_seconds(self) -> float:
        return sum(machine.cpu_seconds(pid) for pid in self.all_pids())

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
