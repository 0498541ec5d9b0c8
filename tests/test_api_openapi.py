"""docs/openapi.yaml is the served document, and it documents what the routes really do;
the deprecated route says so in headers and in the document."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import yaml

from leitstand.http.ingest import DEPRECATED_SINCE, SUNSET

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
INGEST = [("/v1/ingest", "post", "202"), ("/ingest/{domain}", "post", "200")]
# Every status an ingest route can answer with (each one is provoked in test_api_*.py).
INGEST_STATUSES = {"400", "401", "403", "408", "409", "413", "415", "422", "429", "500", "503",
                   "507"}
RATE_HEADERS = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}


@pytest.fixture
async def served(client) -> dict:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


async def test_docs_openapi_yaml_equals_the_served_document(served) -> None:
    on_disk = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    assert on_disk == served, (
        "docs/openapi.yaml drifted from the app: run `make openapi` "
        "(.venv/bin/python -m leitstand.openapi > docs/openapi.yaml)"
    )


async def test_document_does_not_depend_on_settings(make_client, served, tmp_path) -> None:
    other = make_client(token="other", data_dir=tmp_path / "elsewhere", max_body=5,
                        rate_limit="1/hour")
    assert (await other.get("/openapi.json")).json() == served


async def test_every_route_is_documented(client, served) -> None:
    from fastapi.routing import APIRoute

    documented = {(path, method) for path, ops in served["paths"].items() for method in ops}
    for route in client.app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods:
                assert (route.path, method.lower()) in documented
    for path, method, _ in INGEST:
        assert (path, method) in documented
    for path in ("/health", "/version", "/metrics"):
        assert (path, "get") in documented


@pytest.mark.parametrize(("path", "method", "success"), INGEST)
async def test_ingest_operations_are_complete(served, path, method, success) -> None:
    op = served["paths"][path][method]
    responses = op["responses"]
    assert set(responses) == {success} | INGEST_STATUSES
    for status, response in responses.items():
        assert response["description"], status
        if status != success:
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}
    body = op["requestBody"]["content"]
    assert set(body) == {"application/json", "application/x-ndjson"}
    assert op["security"] == [{"XAuth": []}]
    headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
    assert {"X-Auth", "Idempotency-Key"} <= headers
    # Nothing is required that the server does not require.
    required = {p["name"] for p in op.get("parameters", []) if p.get("required")}
    assert required == ({"X-Auth", "domain"} if "{domain}" in path else {"X-Auth"})
    for status in (success, "400", "401", "403", "413", "415", "429", "503", "507"):
        assert set(responses[status]["headers"]) >= RATE_HEADERS, status
    for status in ("429", "503", "507"):
        assert "Retry-After" in responses[status]["headers"], status


async def test_schemas_and_security_scheme(served) -> None:
    components = served["components"]
    assert components["securitySchemes"]["XAuth"] == {
        "type": "apiKey", "in": "header", "name": "X-Auth",
        "description": "A token: LEITSTAND_TOKEN (full access, name `default`) or a named, "
        "scoped token from LEITSTAND_TOKENS_FILE.",
    }
    error = components["schemas"]["Error"]
    assert error["required"] == ["detail"]
    event = components["schemas"]["Event"]
    assert event["type"] == "object"
    assert "required" not in event  # any object: the old document required fields nobody needs
    assert components["schemas"]["Accepted"]["required"] == ["status", "accepted", "domain"]
    refs = str(served)
    for name in components["schemas"]:
        assert f"#/components/schemas/{name}" in refs, f"unused schema {name}"
    for ref in {part.split("'")[0] for part in refs.split("#/components/schemas/")[1:]}:
        assert ref in components["schemas"], f"dangling $ref {ref}"


async def test_open_endpoints_need_no_auth_in_the_document(served) -> None:
    for path in ("/health", "/version", "/metrics"):
        assert "security" not in served["paths"][path]["get"]


async def test_legacy_route_is_deprecated_in_the_document(served) -> None:
    assert served["paths"]["/ingest/{domain}"]["post"]["deprecated"] is True
    assert "deprecated" not in served["paths"]["/v1/ingest"]["post"]
    legacy = served["paths"]["/ingest/{domain}"]["post"]["responses"]
    for status, response in legacy.items():
        assert {"Deprecation", "Sunset", "Link"} <= set(response.get("headers", {})), status


def check_deprecation_headers(headers) -> None:
    assert headers["Deprecation"] == f"@{int(DEPRECATED_SINCE.timestamp())}"
    sunset = parsedate_to_datetime(headers["Sunset"])
    assert headers["Sunset"].endswith(" GMT")
    assert sunset == SUNSET
    months = (sunset.year - DEPRECATED_SINCE.year) * 12 + sunset.month - DEPRECATED_SINCE.month
    assert months == 6 and sunset.day == DEPRECATED_SINCE.day
    assert headers["Link"] == '</v1/ingest>; rel="successor-version"'


async def test_legacy_answers_carry_deprecation_headers(make_client) -> None:
    client = make_client(rate_limit="3/minute")
    ok = await client.post("/ingest/aussen", json={"n": 1})
    assert (ok.status_code, ok.text) == (200, "ok")
    assert ok.headers["content-type"].startswith("text/plain")
    bad = await client.post("/ingest/aussen", content=b"{", headers={"Content-Type":
                                                                    "application/json"})
    denied = await client.post("/ingest/aussen", json={}, headers={"X-Auth": "x"})
    limited = await client.post("/ingest/aussen", json={})
    assert [r.status_code for r in (bad, denied, limited)] == [400, 401, 429]
    for response in (ok, bad, denied, limited):
        check_deprecation_headers(response.headers)
    current = await client.post("/v1/ingest?domain=aussen", json={})
    assert "Deprecation" not in current.headers and "Sunset" not in current.headers


@pytest.mark.parametrize("doc", ["README.md", "docs/api.md"])
def test_docs_state_the_same_deprecation_dates(doc) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert f"Deprecation: @{int(DEPRECATED_SINCE.timestamp())}" in text
    from email.utils import format_datetime

    assert f"Sunset: {format_datetime(SUNSET, usegmt=True)}" in text


def test_openapi_module_prints_the_document(tmp_path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "leitstand.openapi"], cwd=tmp_path,
                         capture_output=True, check=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    printed = yaml.safe_load(out.stdout)
    assert printed == yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    assert not (tmp_path / "data").exists()  # it touched no data dir of its own


async def test_every_protected_operation_documents_auth_and_rate_limit(served) -> None:
    protected = [(path, method, op) for path, ops in served["paths"].items()
                 for method, op in ops.items() if op.get("security")]
    assert len(protected) >= 2
    for path, method, op in protected:
        responses = op["responses"]
        assert {"401", "429"} <= set(responses), (path, method)
        # A token outside its scope gets 403 — but a list filtered to what the token may see
        # (every token may see some schemas) has no such answer.
        assert ("403" in responses) == (path != "/v1/schemas"), (path, method)
        assert "Retry-After" in responses["429"]["headers"], (path, method)
        success = [s for s in responses if s.startswith("2")]
        assert success, (path, method)
        for status in [*success, "401", "429", *(["403"] if "403" in responses else [])]:
            assert set(responses[status]["headers"]) >= RATE_HEADERS, (path, method, status)
