"""Schemas on the ingest path, in-process: 202 / 422 with index and path, nothing stored, other
domains unaffected, the legacy route, the read routes, metrics, rejections, start refusal."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from leitstand.domains import data_file_name

pytestmark = pytest.mark.anyio

Client = Callable[..., httpx.AsyncClient]
SCHEMA = {
    "type": "object",
    "properties": {"temperature": {"type": "number"}, "room": {"type": "string"}},
    "required": ["temperature"],
}
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "schemas"
    directory.mkdir()
    (directory / "aussen.schema.json").write_text(json.dumps(SCHEMA))
    (directory / "garten.*.schema.json").write_text(json.dumps(
        {"required": ["beet"], "properties": {"beet": {"type": "integer"}}}))
    return directory


@pytest.fixture
def client(make_client: Client, schema_dir: Path) -> httpx.AsyncClient:
    return make_client(schema_dir=schema_dir)


def stored(data_dir: Path, domain: str) -> bytes:
    path = data_dir / data_file_name(domain)
    return path.read_bytes() if path.exists() else b""


async def test_valid_event_is_stored_as_sent(client: httpx.AsyncClient, data_dir: Path) -> None:
    # 21 stays an integer, no default is filled in, unknown fields stay
    body = b'{"temperature": 21, "extra": [1, 2]}'
    response = await client.post("/v1/ingest?domain=aussen", content=body)
    assert response.status_code == 202, response.text
    assert stored(data_dir, "aussen") == b'{"temperature":21,"extra":[1,2],"domain":"aussen"}\n'


async def test_invalid_batch_is_422_with_index_and_path_and_nothing_stored(
    client: httpx.AsyncClient, data_dir: Path,
) -> None:
    lines = [{"temperature": 20}] * 3 + [{"temperature": "warm"}, {"room": 5}]
    body = "\n".join(json.dumps(e) for e in lines).encode()
    response = await client.post("/v1/ingest?domain=aussen", content=body, headers=NDJSON)
    assert response.status_code == 422
    answer = response.json()
    assert answer["errors"] == [
        {"index": 3, "path": "/temperature", "message": "'warm' is not of type 'number'"},
        {"index": 4, "path": "/room", "message": "5 is not of type 'string'"},
        {"index": 4, "path": "", "message": "'temperature' is a required property"},
    ]
    assert answer["error_count"] == 3
    assert "2 of 5 events" in answer["detail"] and "aussen.schema.json" in answer["detail"]
    assert stored(data_dir, "aussen") == b""


async def test_at_most_20_errors_listed_with_the_total(client: httpx.AsyncClient) -> None:
    body = json.dumps([{"temperature": str(i)} for i in range(50)])
    answer = (await client.post("/v1/ingest?domain=aussen", content=body)).json()
    assert len(answer["errors"]) == 20 and answer["error_count"] == 50
    assert [e["index"] for e in answer["errors"]] == list(range(20))


async def test_domain_without_schema_is_not_affected(
    client: httpx.AsyncClient, data_dir: Path,
) -> None:
    response = await client.post("/v1/ingest?domain=innen", json={"temperature": "warm"})
    assert response.status_code == 202
    assert stored(data_dir, "innen") == b'{"temperature":"warm","domain":"innen"}\n'


async def test_pattern_schema_applies(client: httpx.AsyncClient, data_dir: Path) -> None:
    assert (await client.post("/v1/ingest?domain=garten.nord",
                              json={"beet": 1})).status_code == 202
    bad = await client.post("/v1/ingest", json={"domain": "Garten.Sued", "beet": "x"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "/beet"
    assert stored(data_dir, "garten.sued") == b""


async def test_schema_sees_the_stored_domain(make_client: Client, tmp_path: Path) -> None:
    directory = tmp_path / "closed"
    directory.mkdir()
    (directory / "aussen.schema.json").write_text(json.dumps({
        "properties": {"domain": {"const": "aussen"}, "n": {"type": "integer"}},
        "required": ["domain"], "additionalProperties": False}))
    client = make_client(schema_dir=directory)
    # `domain` missing from the event, or written in capitals: the stored form is checked
    assert (await client.post("/v1/ingest?domain=aussen", json={"n": 1})).status_code == 202
    assert (await client.post("/v1/ingest", json={"domain": "AUSSEN", "n": 1})).status_code == 202
    bad = await client.post("/v1/ingest?domain=aussen", json={"n": 1, "x": 2})
    assert bad.status_code == 422


async def test_legacy_route_answers_422_json(client: httpx.AsyncClient, data_dir: Path) -> None:
    response = await client.post("/ingest/aussen", json={"temperature": "warm"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.headers["Deprecation"]
    assert response.json()["errors"] == [
        {"index": 0, "path": "/temperature", "message": "'warm' is not of type 'number'"}]
    assert stored(data_dir, "aussen") == b""
    ok = await client.post("/ingest/aussen", json={"temperature": 1})
    assert ok.status_code == 200 and ok.text == "ok"


async def test_idempotent_retry_of_an_invalid_batch_stays_422(
    client: httpx.AsyncClient, data_dir: Path,
) -> None:
    for _ in range(2):
        response = await client.post("/v1/ingest?domain=aussen", json={"temperature": "warm"},
                                     headers={"Idempotency-Key": "k1"})
        assert response.status_code == 422
    assert stored(data_dir, "aussen") == b""


async def test_rejection_metrics_and_record(client: httpx.AsyncClient) -> None:
    await client.post("/v1/ingest?domain=aussen", json={"temperature": "warm"})
    await client.post("/v1/ingest?domain=garten.x", json={})
    metrics = (await client.get("/metrics")).text
    assert 'leitstand_rejections_total{reason="schema"} 2.0' in metrics
    assert 'leitstand_schema_rejections_total{domain="aussen"} 1.0' in metrics
    assert 'leitstand_schema_rejections_total{domain="garten.x"} 1.0' in metrics
    assert "leitstand_schemas 2.0" in metrics
    assert "leitstand_schema_reload_failed 0.0" in metrics
    items = (await client.get("/v1/rejections")).json()["rejections"]
    assert items[1]["status"] == 422 and items[1]["domain"] == "aussen"
    assert items[1]["errors"] == [
        {"index": 0, "path": "/temperature", "message": "'warm' is not of type 'number'"}]
    assert items[0]["errors"][0]["message"] == "'beet' is a required property"


async def test_schema_read_routes(client: httpx.AsyncClient, schema_dir: Path) -> None:
    listing = await client.get("/v1/schemas")
    assert listing.status_code == 200
    digest = hashlib.sha256((schema_dir / "aussen.schema.json").read_bytes()).hexdigest()
    assert listing.json() == {"reload_error": None, "schemas": [
        {"name": "aussen", "kind": "domain", "file": "aussen.schema.json", "sha256": digest},
        {"name": "garten.*", "kind": "pattern", "file": "garten.*.schema.json",
         "sha256": hashlib.sha256(
             (schema_dir / "garten.*.schema.json").read_bytes()).hexdigest()},
    ]}
    one = await client.get("/v1/schemas/Aussen")
    assert one.status_code == 200 and one.json() == SCHEMA
    assert one.headers["ETag"] == f'"{digest}"'
    assert one.headers["X-Schema-File"] == "aussen.schema.json"
    pattern = await client.get("/v1/schemas/garten.beet")
    assert pattern.headers["X-Schema-File"] == "garten.*.schema.json"
    assert (await client.get("/v1/schemas/innen")).status_code == 404
    assert (await client.get("/v1/schemas/-bad-")).status_code == 400
    for path in ("/v1/schemas", "/v1/schemas/aussen"):
        assert (await client.get(path, headers={"X-Auth": "nope"})).status_code == 401


async def test_without_schema_dir_nothing_is_checked(make_client: Client) -> None:
    client = make_client()
    assert (await client.get("/v1/schemas")).json() == {"schemas": [], "reload_error": None}
    assert (await client.get("/v1/schemas/aussen")).status_code == 404
    assert (await client.post("/v1/ingest?domain=aussen", json={"t": "x"})).status_code == 202
    assert "leitstand_schemas " not in (await client.get("/metrics")).text
    assert (await client.get("/health")).json() == {"status": "ok"}


async def test_changed_file_is_used_and_broken_file_keeps_the_old(
    client: httpx.AsyncClient, schema_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    schemas = client.app.state.service.schemas  # type: ignore[attr-defined]
    path = schema_dir / "aussen.schema.json"
    path.write_text(json.dumps({"properties": {"temperature": {"type": "string"}}}))
    schemas._files.check()  # what the next request after the interval does
    assert (await client.post("/v1/ingest?domain=aussen",
                              json={"temperature": "warm"})).status_code == 202
    path.write_text("{broken")
    schemas._files.check()
    assert (await client.post("/v1/ingest?domain=aussen",
                              json={"temperature": 1})).status_code == 422  # old set in force
    listing = (await client.get("/v1/schemas")).json()
    assert listing["reload_error"].startswith("aussen.schema.json: invalid JSON")
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json()["schemas"]["reload_error"] == listing["reload_error"]
    assert health.json()["schemas"]["in_force"] == 2
    metrics = (await client.get("/metrics")).text
    assert "leitstand_schema_reload_failed 1.0" in metrics
    assert "leitstand_schema_reload_failures_total 1.0" in metrics
    os.remove(path)
    schemas._files.check()
    assert (await client.get("/v1/schemas")).json()["reload_error"] is None
    assert (await client.post("/v1/ingest?domain=aussen",
                              json={"temperature": 1})).status_code == 202


def test_broken_file_at_start_refuses_with_its_name(
    make_settings: Callable[..., object], schema_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from leitstand.app import create_app

    (schema_dir / "innen.schema.json").write_text('{"type": 5}')
    with pytest.raises(SystemExit) as exc:
        create_app(make_settings(schema_dir=schema_dir))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "LEITSTAND_SCHEMA_DIR is invalid: innen.schema.json: not a valid schema" in err


def test_schema_dir_must_be_a_directory(make_settings: Callable[..., object],
                                        tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="is not a directory"):
        make_settings(schema_dir=tmp_path / "missing")


async def test_openapi_documents_422_and_the_schema_routes(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    for path in ("/v1/ingest", "/ingest/{domain}"):
        assert "LEITSTAND_SCHEMA_DIR" in doc["paths"][path]["post"]["responses"]["422"][
            "description"]
    error = doc["components"]["schemas"]["Error"]["properties"]
    assert error["errors"]["items"] == {"$ref": "#/components/schemas/SchemaError"}
    assert error["error_count"]["type"] == "integer"
    assert set(doc["paths"]["/v1/schemas"]["get"]["responses"]) == {"200", "401", "429"}
    assert set(doc["paths"]["/v1/schemas/{domain}"]["get"]["responses"]) == {
        "200", "400", "401", "403", "404", "429"}
    assert doc["components"]["schemas"]["SchemaError"]["required"] == ["index", "path", "message"]


async def test_domains_say_which_schema_applies(client: httpx.AsyncClient) -> None:
    for domain in ("aussen", "garten.beet", "innen"):
        await client.post(f"/v1/ingest?domain={domain}", json={"temperature": 1, "beet": 2})
    domains = (await client.get("/v1/domains")).json()["domains"]
    assert {d["domain"]: d["schema"] for d in domains} == {
        "aussen": "aussen.schema.json", "garten.beet": "garten.*.schema.json", "innen": None}
