"""Child processes for tests and benchmarks: started in their own session, their output in a log
file, stopped (or killed with -9) by PID together with everything they started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without leitstand's settings (the developer's `LEITSTAND_*`
    and `LOG_LEVEL` must not leak into a child), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LEITSTAND_") and k != "LOG_LEVEL"}
    env.update(extra)
    return env


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


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (from /proc)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(x) for x in (task / "children").read_text().split())
    except OSError:
        pass
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


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
