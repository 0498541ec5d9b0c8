"""The HTTP layer: the ASGI app around the store.

    app.py         create_app(settings): builds the service container, the routes, the boundary
    service.py     the service container `Service`; `service(request)`, `ServiceDep`
    front.py       the lean ingest front: the outermost ASGI callable, serves ingest.py's routes
    auth.py        `admit`: per-IP rate limit, then X-Auth; `guard(request)`, `Guarded`
    ratelimit.py   the moving-window rate limiter and the client IP (trusted proxies)
    boundary.py    the one error boundary: every error → `{"detail": ...}`, counted, recorded
    apidoc.py      OpenAPI fragments, `DocumentedRoute`, the served document
    ingest.py      POST /v1/ingest and POST /ingest/{domain} (served by front.py)
    params.py      the read routes' query parameters
    read.py        GET /v1/domains, /v1/events, /v1/rejections
    stream.py      GET /v1/stream; sse.py its response; hub.py wakes it after an ack
    ops.py         /health, /version, /metrics
    web.py         the web view's page and files
    accesslog.py   the access-log middleware and request ids
    rejections.py  the ring buffer of recent rejections
"""
