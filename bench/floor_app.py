"""The HTTP floor: a bare ASGI app that reads the request body and answers a fixed 202.

Served by the same uvicorn, with the same flags and the same wrk script as leitstand, it shows
what the HTTP stack alone costs on this machine: `uvicorn bench.floor_app:app`.
"""

from __future__ import annotations

from typing import Any

_BODY = b'{"status":"accepted","accepted":1,"domain":"bench"}'
_START = {
    "type": "http.response.start",
    "status": 202,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BODY)).encode()),
    ],
}
_END = {"type": "http.response.body", "body": _BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(_START)
    await send(_END)
