"""Start the real service as the README does (`uvicorn app:app`), on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group led by `proc` (started with start_new_session=True), and
    SIGKILL it if it has not exited within `timeout`."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class ChildProcess:
    """A child process in its own session, its output appended to `log_path`; stopped or
    killed (-9) by its PID, together with anything it started."""

    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def spawn(self, cmd: list[str], **popen: object) -> subprocess.Popen[bytes]:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill9()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, **popen)  # type: ignore[call-overload]
        return self.proc

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        """SIGKILL the whole process group, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout)
        self._close_log()

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()


class ServerProcess(ChildProcess):
    """A uvicorn process serving `app:app` from the repo root. Always stopped by its PID."""

    def __init__(
        self,
        data_dir: Path,
        *,
        token: str | None = "test-token",
        workers: int = 1,
        cwd: Path | None = None,
        env: dict[str, str | None] | None = None,  # a None value unsets that variable
        port: int | None = None,
        log_path: Path | None = None,
        args: list[str] | None = None,  # extra uvicorn options
    ) -> None:
        self.data_dir = data_dir
        self.token = token
        self.workers = workers
        self.port = port or free_port()
        self.extra_env = env or {}
        self.log_path = log_path or data_dir.parent / f"server-{self.port}.log"
        # Another working directory (its `.env` is read); the app is still imported from ROOT.
        self.cwd = cwd
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("LEITSTAND_") and k != "LOG_LEVEL"
        }
        env.update({
            "LEITSTAND_DATA_DIR": str(self.data_dir),
            "LEITSTAND_RATE_LIMIT": "1000000/second",
            **self.extra_env,
        })
        if self.token is not None:  # None: the token comes from `.env` in `cwd`
            env["LEITSTAND_TOKEN"] = self.token
        env = {k: v for k, v in env.items() if v is not None}
        cmd = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
               "--port", str(self.port), "--no-access-log"]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        if self.cwd is not None:
            cmd += ["--app-dir", str(ROOT)]
        cmd += self.args
        self.spawn(cmd, cwd=self.cwd or ROOT, env=env)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server not ready within {timeout}s: {self.log()}")

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
