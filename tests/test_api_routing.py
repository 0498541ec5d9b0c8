"""The ingest routes at the edges of routing: they answer like every other route of the app
(one router, one error boundary), and the document describes exactly what is served."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .conftest import TOKEN

pytestmark = pytest.mark.anyio

INGEST_PATHS = ("/v1/ingest", "/ingest/aussen")
OTHER_METHODS = ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS")


def lines(data_dir: Path, domain: str) -> list[str]:
    path = data_dir / f"{domain}.jsonl"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("path", INGEST_PATHS)
@pytest.mark.parametrize("method", OTHER_METHODS)
async def test_other_methods_get_405_with_allow_in_the_error_shape(
    client, data_dir, path, method
) -> None:
    response = await client.request(method, path + "?domain=aussen", content=b'{"n":1}')
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    if method != "HEAD":
        assert response.json() == {"detail": "Method Not Allowed"}
    assert lines(data_dir, "aussen") == []
    # counted and recorded at the one error boundary, like any other rejection
    metrics = (await client.get("/metrics")).text
    assert 'leitstand_rejections_total{reason="method_not_allowed"} 1.0' in metrics
    route = path.replace("aussen", "{domain}")
    assert f'leitstand_requests_total{{route="{route}",status="405"}}' in metrics


@pytest.mark.parametrize(("path", "target"), [
    ("/v1/ingest/?domain=aussen", "http://test/v1/ingest?domain=aussen"),
    ("/ingest/aussen/", "http://test/ingest/aussen"),
])
async def test_trailing_slash_redirects_like_every_route(client, data_dir, path, target) -> None:
    """Starlette's redirect_slashes, as for any other route: 307 (the client repeats the POST
    with its body), nothing stored on the first request."""
    response = await client.post(path, json={"n": 1})
    assert response.status_code == 307
    assert response.headers["location"] == target
    assert lines(data_dir, "aussen") == []
    again = await client.post(response.headers["location"], json={"n": 1})
    assert again.status_code in (200, 202)
    assert len(lines(data_dir, "aussen")) == 1
    read_side = await client.get("/v1/domains/")
    assert read_side.status_code == 307  # the same rule, on a FastAPI-declared route


@pytest.mark.parametrize(("path", "domain"), [("/ingest/", None), ("/ingest/a/b", None)])
async def test_legacy_route_needs_exactly_one_path_segment(client, path, domain) -> None:
    response = await client.post(path, json={"n": 1})
    assert response.status_code == 404
    assert list(response.json()) == ["detail"]


async def test_repeated_domain_parameter_the_last_one_wins(client, data_dir) -> None:
    response = await client.post("/v1/ingest?domain=erste&domain=zweite", json={"n": 1})
    assert response.status_code == 202
    assert response.json()["domain"] == "zweite"
    assert lines(data_dir, "erste") == []
    assert len(lines(data_dir, "zweite")) == 1
    # the same answer every time (a remembered query string must not change it)
    again = await client.post("/v1/ingest?domain=erste&domain=zweite", json={"n": 2})
    assert again.json()["domain"] == "zweite"
    other = await client.post("/v1/ingest?domain=zweite&domain=erste", json={"n": 3})
    assert other.json()["domain"] == "erste"


async def test_legacy_route_ignores_a_domain_query_parameter(client, data_dir) -> None:
    response = await client.post("/ingest/aussen?domain=innen", json={"n": 1})
    assert (response.status_code, response.text) == (200, "ok")
    assert len(lines(data_dir, "aussen")) == 1
    assert lines(data_dir, "innen") == []


@pytest.mark.parametrize(("path", "status"), [("/v1/ingest?domain=aussen", 202),
                                              ("/ingest/aussen", 200)])
async def test_served_under_a_root_path(make_client, data_dir, path, status) -> None:
    """Behind a proxy that strips a prefix (`uvicorn --root-path /leitstand`): the same
    answers, errors included, and the same route label in the metrics."""
    app = make_client().app
    transport = httpx.ASGITransport(app=app, root_path="/leitstand")
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 headers={"X-Auth": TOKEN}) as client:
        ok = await client.post("/leitstand" + path, json={"n": 1})
        assert ok.status_code == status, ok.text
        assert ok.headers["X-RateLimit-Limit"]
        denied = await client.post("/leitstand" + path, json={"n": 1}, headers={"X-Auth": "x"})
        assert denied.status_code == 401
        assert list(denied.json()) == ["detail"]
        wrong_method = await client.get("/leitstand" + path)
        assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
        metrics = (await client.get("/leitstand/metrics")).text
    assert len(lines(data_dir, "aussen")) == 1
    route = path.split("?")[0].replace("aussen", "{domain}")
    assert f'leitstand_requests_total{{route="{route}",status="{status}"}} 1.0' in metrics
    assert f'leitstand_requests_total{{route="{route}",status="401"}} 1.0' in metrics


async def test_the_document_lists_exactly_the_served_ingest_operations(client) -> None:
    """Every (path, method) the document names for ingest is served, and nothing else is."""
    document = (await client.get("/openapi.json")).json()
    ingest_ops = {(path, method.upper()) for path, ops in document["paths"].items()
                  for method, op in ops.items() if "ingest" in op.get("tags", [])}
    assert ingest_ops == {("/v1/ingest", "POST"), ("/ingest/{domain}", "POST")}
    for path, method in ingest_ops:
        url = path.replace("{domain}", "aussen")
        response = await client.request(method, url + "?domain=aussen", json={"n": 1})
        assert response.status_code in (200, 202)


async def test_ingest_operations_come_from_the_routes_that_serve(client) -> None:
    """The document's ingest operations are the served routes' own definitions, and their
    path parameters are the ones the routes match."""
    from leitstand.http.apidoc import DocumentedRoute

    document = (await client.get("/openapi.json")).json()
    routes = [r for r in client.app.routes if isinstance(r, DocumentedRoute)]
    assert {(r.path, r.method) for r in routes} == {("/v1/ingest", "POST"),
                                                    ("/ingest/{domain}", "POST")}
    # the lean front (the app's outermost layer) serves exactly these route objects
    front = client.app.build_middleware_stack()
    assert [id(r) for r in front.routes] == [id(r) for r in routes]
    for route in routes:
        operation = document["paths"][route.path][route.method.lower()]
        assert operation == route.operation
        in_path = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert in_path == set(route.param_convertors)
    # one definition per path: no FastAPI route (in any included router) declares them too
    from fastapi.openapi.utils import get_openapi

    fastapi_paths = get_openapi(title="t", version="1", routes=client.app.routes)["paths"]
    assert "/health" in fastapi_paths
    assert not {"/v1/ingest", "/ingest/{domain}"} & set(fastapi_paths)
    assert [m.cls.__name__ for m in client.app.user_middleware] == ["AccessLog"]
