"""Entry point for `uvicorn app:app`: the service configured from the environment and `.env`."""

import gc

from leitstand.app import create_app
from leitstand.config import load_settings

app = create_app(load_settings())

# The startup heap (FastAPI, pydantic, the routes: most of the process) lives as long as the
# process: keep it out of the collector's full passes, which otherwise show as tail latency
# (single-event p99 under load about a third lower, bench/notes.md).
gc.collect()
gc.freeze()
