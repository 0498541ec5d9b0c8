"""Every error path answers the same JSON shape: `{"detail": "<reason>"}`."""

from __future__ import annotations

import gzip

import httpx
import pytest

from .conftest import TOKEN

pytestmark = pytest.mark.anyio

JSON = {"Content-Type": "application/json"}

# (method, url, body, headers, expected status)
ERROR_REQUESTS = [
    ("POST", "/v1/ingest?domain=aussen", b"{", JSON, 400),
    ("POST", "/v1/ingest", b'{"n":1}', JSON, 400),
    ("POST", "/v1/ingest?domain=a_b", b'{"n":1}', JSON, 400),
    ("POST", "/v1/ingest?domain=a", b'{"domain":"b"}', JSON, 400),
    ("POST", "/v1/ingest?domain=a", b'{"v":NaN}', JSON, 400),
    ("POST", "/v1/ingest?domain=a", b"[1]", JSON, 400),
    ("POST", "/v1/ingest?domain=a", b"\xff", JSON, 400),
    ("POST", "/v1/ingest?domain=a", b"x", {**JSON, "Content-Encoding": "gzip"}, 400),
    ("POST", "/v1/ingest?domain=a", b'{"n":1}', {**JSON, "Idempotency-Key": ""}, 400),
    ("POST", "/ingest/aussen", b"{", JSON, 400),
    ("POST", "/v1/ingest?domain=a", b"{}", {**JSON, "X-Auth": "wrong"}, 401),
    ("POST", "/ingest/aussen", b"{}", {**JSON, "X-Auth": ""}, 401),
    ("POST", "/v1/ingest?domain=a", b"{}", {**JSON, "X-Auth": "a, b"}, 401),
    ("GET", "/nope", None, {}, 404),
    ("POST", "/v1/nope", b"{}", JSON, 404),
    ("GET", "/ingest", None, {}, 404),
    ("GET", "/v1/ingest", None, {}, 405),
    ("PUT", "/v1/ingest?domain=a", b"{}", JSON, 405),
    ("DELETE", "/ingest/aussen", None, {}, 405),
    ("POST", "/health", b"{}", JSON, 405),
    ("POST", "/v1/ingest?domain=a", b"x" * 2000, JSON, 413),
    ("POST", "/v1/ingest?domain=a", gzip.compress(b" " * 5000),
     {**JSON, "Content-Encoding": "gzip"}, 413),
    ("POST", "/v1/ingest?domain=a", b"{}", {"Content-Type": "text/plain"}, 415),
    ("POST", "/v1/ingest?domain=a", b"{}", {**JSON, "Content-Encoding": "zstd"}, 415),
]


@pytest.mark.parametrize(("method", "url", "body", "headers", "status"), ERROR_REQUESTS)
async def test_error_shape(make_client, method, url, body, headers, status) -> None:
    client = make_client(max_body=1000)
    response = await client.request(method, url, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert list(payload) == ["detail"]
    assert isinstance(payload["detail"], str) and payload["detail"]


async def test_idempotency_conflict_422_and_rate_limit_429_have_the_shape(make_client) -> None:
    client = make_client(rate_limit="2/minute")
    key = {"Idempotency-Key": "k"}
    first = await client.post("/v1/ingest?domain=a", json={"n": 1}, headers=key)
    assert first.status_code == 202
    conflict = await client.post("/v1/ingest?domain=a", json={"n": 2}, headers=key)
    limited = await client.post("/v1/ingest?domain=a", json={"n": 3})
    assert (conflict.status_code, limited.status_code) == (422, 429)
    for response in (conflict, limited):
        assert list(response.json()) == ["detail"]
        assert isinstance(response.json()["detail"], str)


async def test_405_names_the_allowed_method(client) -> None:
    response = await client.get("/v1/ingest")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_unexpected_error_is_500_json_with_request_id(make_client, monkeypatch) -> None:
    """A bug anywhere below the routes still answers `{"detail": ...}`, never a traceback."""
    app = make_client().app

    async def broken_append(*args, **kwargs):
        raise RuntimeError("boom from a test")

    monkeypatch.setattr(app.state.service.store, "append", broken_append)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 headers={"X-Auth": TOKEN}) as client:
        response = await client.post("/ingest/aussen", json={},
                                     headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert response.headers["X-Request-ID"] == "req-500"
    assert response.headers["Deprecation"]


def test_every_server_error_is_defined_in_leitstand_errors() -> None:
    """One error module: no LeitstandError subclass lives anywhere else in the package."""
    import importlib
    import pkgutil

    import leitstand
    from leitstand.errors import LeitstandError

    for module in pkgutil.walk_packages(leitstand.__path__, "leitstand."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, todo = [], [LeitstandError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    assert len(found) > 10
    assert {cls.__module__ for cls in found} == {"leitstand.errors"}, [
        f"{cls.__module__}.{cls.__name__}" for cls in found if cls.__module__ != "leitstand.errors"]
