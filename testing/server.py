"""Start the real service as the README does (`uvicorn app:app`), or another ASGI app under the
same uvicorn, on a free loopback port; ready only once every worker answers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from .processes import ChildProcess, children, clean_env, cmdline, free_port

ROOT = Path(__file__).resolve().parent.parent
# The limiter still runs on every request (it is part of the ingest path), but never says no.
# A per-second window keeps the limiter's moving-window memory bounded at ~1 s of requests.
UNLIMITED = "1000000/second"


class ServerProcess(ChildProcess):
    """`uvicorn <target>` from the repo root, in its own session. Always stopped by its PID.
    Another ASGI server: override `command`, `STARTED` and `worker_pids`."""

    # what the server logs once per worker when that worker serves
    STARTED = b"Application startup complete"

    def __init__(
        self,
        data_dir: Path | None,  # None: LEITSTAND_DATA_DIR from `env` (or not needed)
        *,
        token: str | None = "test-token",  # None: from `env`, or `.env` in `cwd`
        workers: int = 1,
        cwd: Path | None = None,
        env: dict[str, str | None] | None = None,  # a None value unsets that variable
        port: int | None = None,
        log_path: Path | None = None,
        args: list[str] | None = None,  # extra uvicorn options
        target: str = "app:app",
    ) -> None:
        self.data_dir = data_dir
        self.token = token
        self.workers = workers
        self.port = port or free_port()
        self.extra_env = dict(env or {})
        if log_path is None:
            assert data_dir is not None, "a server without data_dir needs a log_path"
            log_path = data_dir.parent / f"server-{self.port}.log"
        self.log_path = log_path
        # Another working directory (its `.env` is read); the app is still imported from ROOT.
        self.cwd = cwd
        self.args = list(args or [])
        self.target = target
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env: dict[str, str | None] = {**clean_env(), "LEITSTAND_RATE_LIMIT": UNLIMITED}
        if self.data_dir is not None:
            env["LEITSTAND_DATA_DIR"] = str(self.data_dir)
        env.update(self.extra_env)
        if self.token is not None:
            env["LEITSTAND_TOKEN"] = self.token
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.spawn(self.command(), cwd=self.cwd or ROOT,
                   env={k: v for k, v in env.items() if v is not None})
        try:
            self.wait_ready(timeout, log_start)
        except BaseException:
            self.stop()
            raise
        return self

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "uvicorn", self.target, "--host", "127.0.0.1",
               "--port", str(self.port), "--no-access-log"]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        if self.cwd is not None:
            cmd += ["--app-dir", str(ROOT)]
        return cmd + self.args

    def wait_ready(self, timeout: float, log_start: int = 0) -> None:
        """Until `/health` answers 2xx and, with several workers, every worker has started
        (else the first requests would all go to the one worker that is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            if self._workers_started(log_start) and self.healthy():
                return
            time.sleep(0.05)
        raise TimeoutError(f"server not ready within {timeout}s: {self.log()}")

    def _workers_started(self, log_start: int) -> bool:
        if self.workers == 1:
            return True
        with open(self.log_path, "rb") as log:
            log.seek(log_start)
            started = log.read().count(self.STARTED)
        return started >= self.workers and len(self.worker_pids()) == self.workers

    def healthy(self) -> bool:
        """The readiness probe (a subclass serving https overrides it)."""
        try:
            return httpx.get(self.url + "/health", timeout=1.0).is_success
        except httpx.HTTPError:
            return False

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: uvicorn itself, or its spawned workers."""
        assert self.proc is not None
        if self.workers == 1:
            return [self.proc.pid]
        return [pid for pid in children(self.proc.pid) if "spawn_main" in cmdline(pid)]

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
