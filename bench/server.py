"""The server under load: the shared `testing.ServerProcess` (leitstand as the README starts
it, or the floor app), or the same app under granian (`--server granian`), plus the CPU time of
its processes for the report."""

from __future__ import annotations

import sys
from pathlib import Path

from testing import ROOT, ServerProcess
from testing import UNLIMITED as RATE_LIMIT
from testing.processes import children

from . import machine

__all__ = ["RATE_LIMIT", "ROOT", "SERVERS", "GranianServer", "Server"]


class Server(ServerProcess):
    """`uvicorn <target> --workers N` with the settings in `env`; always stopped by its PID."""

    def __init__(self, target: str, *, workers: int, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(None, target=target, token=None, workers=workers, log_path=log_path,
                         env=dict(env or {}))

    def start(self, timeout: float = 60.0) -> Server:
        super().start(timeout)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)

    def all_pids(self) -> list[int]:
        assert self.proc is not None
        pids = [self.proc.pid]
        pids += [p for p in children(self.proc.pid) if p not in pids]
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server and its workers so far."""
        return sum(machine.cpu_seconds(pid) for pid in self.all_pids())


class GranianServer(Server):
    """The same app under granian (`granian --interface asgi`): a supervisor process and
    `workers` worker processes, every one of which serves requests."""

    STARTED = b"Started worker-"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--no-ws",
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
                *self.args, self.target]

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        return children(self.proc.pid)


SERVERS: dict[str, type[Server]] = {"uvicorn": Server, "granian": GranianServer}
