"""Process-wide tuning belongs to the server process, not to the app: `create_app` leaves the
interpreter alone, and both entry points (`uvicorn app:app`, `leitstand serve`) tune it."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
from pathlib import Path

from leitstand.app import SWITCH_INTERVAL, create_app

ROOT = Path(__file__).resolve().parent.parent

REPORT = ("import gc, logging, sys\n"
          "print(sys.getswitchinterval(), gc.get_freeze_count() > 0, logging.logThreads,\n"
          "      logging.logProcesses, logging.logMultiprocessing)\n")
TUNED = [str(SWITCH_INTERVAL), "True", "False", "False", "False"]


def test_create_app_leaves_the_process_settings_alone(make_settings) -> None:
    def state() -> tuple[object, ...]:
        return (sys.getswitchinterval(), gc.get_freeze_count(), gc.isenabled(),
                logging.logThreads, logging.logProcesses, logging.logMultiprocessing)

    before = state()
    assert before[0] != SWITCH_INTERVAL  # else this test could not see a change
    assert before[3:] == (True, True, True)
    create_app(make_settings())
    assert state() == before


def run_entry(code: str, tmp_path: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEITSTAND_")}
    env.update(PYTHONPATH=str(ROOT), LEITSTAND_TOKEN="t",
               LEITSTAND_DATA_DIR=str(tmp_path / "data"))
    out = subprocess.run([sys.executable, "-c", code + REPORT], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_uvicorn_entry_point_tunes_the_process(tmp_path) -> None:
    assert run_entry("import app\n", tmp_path) == TUNED


def test_leitstand_serve_factory_tunes_each_worker(tmp_path) -> None:
    """uvicorn calls the factory in every worker process (`--workers`, `--reload` too)."""
    code = ("from leitstand.cli.serve import app_from_environment\n"
            "app_from_environment()\n")
    assert run_entry(code, tmp_path) == TUNED
