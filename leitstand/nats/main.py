"""The entry point of `leitstand sink` (and `python -m leitstand.sink`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from pydantic import ValidationError

from ..config import Settings, load_settings
from ..logs import configure_logging
from ..metrics import Metrics
from ..store import store_options
from .domainsink import DataDir
from .sink import Sink

log = logging.getLogger("leitstand.sink")


async def serve(settings: Settings) -> None:
    """Run the sink until SIGTERM or SIGINT."""
    data = DataDir(settings.data_dir, fsync=settings.fsync == "always",
                   lock_timeout=settings.lock_timeout, lifecycle=store_options(settings))
    metrics_server = serve_metrics(settings.sink_metrics_address, data.metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Sink(settings, data).run(stop)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        data.close()


def serve_metrics(address: str | None, metrics: Metrics) -> WSGIServer | None:
    """The sink's own Prometheus endpoint (`LEITSTAND_SINK_METRICS_ADDRESS`, host:port)."""
    if address is None:
        return None
    host, _, port = address.rpartition(":")
    server, _ = start_http_server(int(port), addr=host.strip("[]"), registry=metrics.registry)
    log.info("sink: metrics on http://%s/metrics", address)
    return server


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

