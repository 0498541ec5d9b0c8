"""The OpenAPI document: fragments the routes share, and the assembly of the served document.

FastAPI documents its own routes (`APIRoute`). The lean ingest routes are plain Starlette
routes; they carry their operation with them (`DocumentedRoute`), so the document is generated
from the very definition that serves the requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

RATE_HEADERS = {
    "X-RateLimit-Limit": {"description": "Requests allowed per window.",
                          "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests left in the current window.",
                              "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Seconds until the window frees up.",
                          "schema": {"type": "integer"}},
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                               "schema": {"type": "integer"}}}
SECURITY: list[dict[str, list[str]]] = [{"XAuth": []}]
_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error answer: `{"detail": ...}` (the Error schema), with `headers` if given."""
    out: dict[str, Any] = {"description": description, "content": _ERROR}
    if headers:
        out["headers"] = headers
    return out


def param(name: str, description: str, schema: dict[str, Any], where: str = "query",
          required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": description,
            "schema": schema}


AUTH_PARAM = param("X-Auth", "A token (LEITSTAND_TOKEN or LEITSTAND_TOKENS_FILE).",
                   {"type": "string"}, "header", True)


class DocumentedRoute(Route):
    """A Starlette route for one method that carries its own OpenAPI operation."""

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]], *,
                 method: str, operation: dict[str, Any]) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.operation = operation

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            # FastAPI's router sets `scope["route"]` only for its own routes (APIRoute adds it
            # here too); the access log labels requests by it.
            child_scope["route"] = self
        return match, child_scope


_COMPONENTS: dict[str, Any] = {
    "securitySchemes": {"XAuth": {
        "type": "apiKey", "in": "header", "name": "X-Auth",
        "description": "A token: LEITSTAND_TOKEN (full access, name `default`) or a named, "
        "scoped token from LEITSTAND_TOKENS_FILE.",
    }},
    "schemas": {
        "Event": {
            "type": "object",
            "description": "Any JSON object. `domain`, if present, must match the request's "
            "domain; it is set to the normalised domain when stored.",
            "properties": {"domain": {"type": "string", "maxLength": 253}},
            "additionalProperties": True,
        },
        "Accepted": {
            "type": "object",
            "required": ["status", "accepted", "domain"],
            "properties": {
                "status": {"type": "string", "enum": ["accepted"]},
                "accepted": {"type": "integer", "minimum": 1},
                "domain": {"type": "string"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["detail"],
            "properties": {
                "detail": {"description": "Why the request failed."},
                "errors": {"type": "array", "maxItems": 20,
                           "items": {"$ref": "#/components/schemas/SchemaError"},
                           "description": "Only on 422 for events that do not match their "
                           "domain's schema: the first errors, in batch order."},
                "error_count": {"type": "integer", "minimum": 1,
                                "description": "Only with `errors`: all errors of the batch."},
            },
        },
        "SchemaError": {
            "type": "object",
            "required": ["index", "path", "message"],
            "properties": {
                "index": {"type": "integer", "minimum": 0,
                          "description": "The event's position in the batch (0-based; NDJSON: "
                          "counting non-blank lines)."},
                "path": {"type": "string", "description": "JSON Pointer into the event (RFC "
                         "6901; empty: the event as a whole), e.g. `/temperature`."},
                "message": {"type": "string", "description": "The validator's message."},
            },
        },
    },
}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The served document: every route in the app's order, the X-Auth scheme and the shared
    schemas; FastAPI's validation-error schema replaced by the one error shape."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    # The routes that carry their own operation first (they are the first in the router).
    paths: dict[str, dict[str, Any]] = {}
    for route in app.routes:
        if isinstance(route, DocumentedRoute):
            paths.setdefault(route.path, {})[route.method.lower()] = route.operation
    for path, operations in doc.get("paths", {}).items():
        paths.setdefault(path, {}).update(operations)
    doc["paths"] = paths
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(_COMPONENTS["securitySchemes"])
    schemas = components.setdefault("schemas", {})
    schemas.update(_COMPONENTS["schemas"])
    for operations in paths.values():
        for operation in operations.values():
            _one_error_shape(operation)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    # Fragments are shared between operations: a copy without shared objects (a YAML dump
    # would print those as anchors and aliases).
    doc = dict(orjson.loads(orjson.dumps(doc)))
    app.openapi_schema = doc
    return doc


def _one_error_shape(operation: dict[str, Any]) -> None:
    responses = operation.get("responses", {})
    response = responses.get("422")
    if response is not None and "HTTPValidationError" in str(response):
        responses["422"] = {
            "description": response.get("description", "Invalid parameter."),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
