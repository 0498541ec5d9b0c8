"""The entry point of `leitstand sink` (and `python -m leitstand.sink`)."""

from __future__ import annotations

import asyncio
import signal

from pydantic import ValidationError

from ..config import Settings, load_settings
from ..logs import configure_logging
from .domainsink import DataDir
from .sink import Sink


async def serve(settings: Settings) -> None:
    """Run the sink until SIGTERM or SIGINT."""
    data = DataDir(settings.data_dir, fsync=settings.fsync == "always",
                   lock_timeout=settings.lock_timeout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Sink(settings, data).run(stop)
    finally:
        data.close()


def sink_settings() -> Settings:
    """The service's settings; the sink serves no HTTP, so it does without LEITSTAND_TOKEN."""
    try:
        return Settings()
    except ValidationError as exc:
        if any(e["loc"] == ("token",) and e["type"] == "missing" for e in exc.errors()):
            return load_settings(token="unused-by-the-sink")
        return load_settings()  # says what else is wrong, and exits


def main() -> None:
    """Entry point of `leitstand sink` and `python -m leitstand.sink`."""
    settings = sink_settings()
    configure_logging(settings.log_level)  # escapes what NATS or a publisher put in a line
    asyncio.run(serve(settings))

