"""The web view: its page and its two static files (not in the OpenAPI document). The page
reads through the read API with the token the user types in; the files themselves are open."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from ..errors import NotFound

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_WEB_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# The page loads only its own files and talks only to its own origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def web_index() -> Response:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers=_PAGE_HEADERS)


@router.get("/web/{name}")
async def web_file(name: str) -> Response:
    media = _WEB_FILES.get(name)
    if media is None:
        raise NotFound("no such file")
    return FileResponse(WEB_DIR / name, media_type=f"{media}; charset=utf-8",
                        headers=_PAGE_HEADERS)
