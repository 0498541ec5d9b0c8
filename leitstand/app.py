"""What a server process runs: `create_app(settings)`, the ASGI app (built in leitstand.http),
and `tune_process()`, the process-wide tuning of a server process.

Both entry points — the root `app.py` (`uvicorn app:app`) and `leitstand serve` — call
`tune_process()` in every server process; `create_app` never does, so tests and the OpenAPI
export leave the interpreter as they found it.
"""

from __future__ import annotations

import gc
import logging
import sys

from .http.app import create_app

# A group commit hands the GIL between the event loop and a store I/O thread at every syscall;
# with the default 5 ms switch interval each handoff can wait 5 ms while the loop is busy.
# 0.5 ms: about 1.6-2x the durable single-event throughput (bench/notes.md).
SWITCH_INTERVAL = 0.0005


def tune_process() -> None:
    """Tune this interpreter for serving; call it once the app is built, in each worker.

    The switch interval as above; log records without thread and process names. Then the
    startup heap (FastAPI, pydantic, the routes: most of the process) is frozen: it lives as
    long as the process, and keeping it out of the collector's full passes takes them out of
    the latency tail (single-event p99 about a third lower, bench/notes.md).
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    # No log format of the server shows thread or process names: logging's documented switches
    # stop it from looking them up for every record (the access log makes one per request).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    gc.collect()
    gc.freeze()


__all__ = ["SWITCH_INTERVAL", "create_app", "tune_process"]
