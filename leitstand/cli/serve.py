"""`leitstand serve` (the service under uvicorn) and `leitstand sink` (the nats sink)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the service (uvicorn)",
                                description="Run the service with uvicorn, hardened as "
                                "docs/operations.md recommends (request-head deadline, no proxy "
                                "headers from uvicorn, keep-alive 5 s, a concurrency limit); "
                                "settings come from the environment and .env as for "
                                "`uvicorn app:app`.")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8788)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    serve.add_argument("--limit-concurrency", type=int, default=1000,
                       help="connections and requests at once; beyond, uvicorn answers 503")
    serve.add_argument("--access-log", action="store_true",
                       help="also uvicorn's access log (leitstand logs every request itself)")
    serve.set_defaults(run=run_serve)

    sink = commands.add_parser("sink", help="write the NATS JetStream stream into JSONL files",
                               description="Run the sink of the nats backend: a durable "
                               "JetStream consumer that writes every event into "
                               "LEITSTAND_DATA_DIR exactly once (see docs/cluster.md).")
    sink.set_defaults(run=run_sink)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..config import load_settings

    settings = load_settings()  # a missing token or bad setting: a readable message, exit 2
    uvicorn.run(
        "leitstand.cli.serve:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers if args.workers > 1 else None,
        reload=args.reload,
        access_log=args.access_log,
        log_level=settings.log_level.lower(),
        # the settings for an open network (docs/operations.md, "Starting on an open network")
        http="leitstand.headertimeout:HeaderTimeoutProtocol",
        proxy_headers=False,  # only LEITSTAND_TRUSTED_PROXIES decides about X-Forwarded-For
        timeout_keep_alive=5,
        limit_concurrency=args.limit_concurrency,
    )
    return 0


def app_from_environment() -> Any:
    """The app as `uvicorn app:app` builds it, and the process tuned as there: uvicorn calls
    this factory in the serving process, once per worker."""
    from ..app import create_app, tune_process
    from ..config import load_settings

    app = create_app(load_settings())
    tune_process()
    return app


def run_sink(args: argparse.Namespace) -> int:
    from ..nats.main import main as sink_main

    sink_main()
    return 0
