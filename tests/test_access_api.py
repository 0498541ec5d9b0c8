"""Named, scoped tokens in-process: 403 outside the scope (nothing written), filtered reads,
names in metrics and rejections (never a secret), expiry, per-token and read rate limits,
/v1/whoami, and the /health detail after a broken reload."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import TOKEN

pytestmark = pytest.mark.anyio

GARTEN, LESER, VOLL, ALT = "garten-secret-1", "leser-secret-2", "voll-secret-3", "alt-secret-4"


def entry(name: str, secret: str, write: list[str], read: list[str], extra: str = "") -> str:
    quoted = ", ".join(f'"{p}"' for p in write), ", ".join(f'"{p}"' for p in read)
    return (f'[[token]]\nname = "{name}"\nsha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"'
            f"\nwrite = [{quoted[0]}]\nread = [{quoted[1]}]\n{extra}\n")


TOKENS = (entry("garten-sensor", GARTEN, ["garten.*"], [])
          + entry("leser", LESER, [], ["aussen"])
          + entry("voll", VOLL, ["*"], ["*"])
          + entry("alt", ALT, ["*"], ["*"], 'expires = "2001-02-03T04:05:06Z"'))


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(TOKENS)
    return path


@pytest.fixture
def make(make_client: Callable[..., httpx.AsyncClient],
         tokens_file: Path) -> Callable[..., httpx.AsyncClient]:
    def build(**overrides: object) -> httpx.AsyncClient:
        return make_client(tokens_file=tokens_file, **overrides)
    return build


def as_(secret: str) -> dict[str, str]:
    return {"X-Auth": secret}


async def test_writes_outside_the_scope_are_403_and_store_nothing(make, data_dir) -> None:
    client = make()
    ok = await client.post("/v1/ingest?domain=garten.beet", json={"n": 1}, headers=as_(GARTEN))
    assert ok.status_code == 202
    denied = await client.post("/v1/ingest", json=[{"domain": "keller", "n": 1}] * 3,
                               headers=as_(GARTEN))
    assert denied.status_code == 403
    assert denied.json() == {"detail": "token 'garten-sensor' may not write domain 'keller'"}
    legacy = await client.post("/ingest/Garten", json={"n": 1}, headers=as_(GARTEN))
    assert legacy.status_code == 403  # `garten.*` is below garten, not garten itself
    assert legacy.json()["detail"] == "token 'garten-sensor' may not write domain 'garten'"
    reader = await client.post("/v1/ingest?domain=aussen", json={"n": 1}, headers=as_(LESER))
    assert reader.status_code == 403
    assert sorted(p.name for p in data_dir.glob("*.jsonl")) == ["garten.beet.jsonl"]
    # LEITSTAND_TOKEN still works as before: everything, under the name `default`.
    assert (await client.post("/v1/ingest?domain=keller", json={"n": 1})).status_code == 202


async def test_unknown_and_expired_tokens_are_401_and_name_nothing(make) -> None:
    client = make()
    for secret in ("nope", GARTEN[:-1], GARTEN + "x", ""):
        response = await client.post("/v1/ingest?domain=garten.a", json={}, headers=as_(secret))
        assert response.status_code == 401
        assert "garten" not in response.json()["detail"].replace("garten.a", "")
    expired = await client.get("/v1/domains", headers=as_(ALT))
    assert expired.status_code == 401
    assert expired.json() == {"detail": "token expired at 2001-02-03T04:05:06Z"}


async def test_reads_show_only_readable_domains(make) -> None:
    client = make()
    for domain in ("aussen", "keller", "garten.beet"):
        await client.post(f"/v1/ingest?domain={domain}", json={"n": 1})
    listed = await client.get("/v1/domains", headers=as_(LESER))
    assert [d["domain"] for d in listed.json()["domains"]] == ["aussen"]
    full = await client.get("/v1/domains", headers=as_(VOLL))
    assert [d["domain"] for d in full.json()["domains"]] == ["aussen", "garten.beet", "keller"]
    assert (await client.get("/v1/events?domain=AUSSEN", headers=as_(LESER))).status_code == 200
    for path in ("/v1/events?domain=keller", "/v1/stream?domain=keller",
                 "/v1/events?domain=nirgends"):  # 403 before 404: no probing for domains
        response = await client.get(path, headers=as_(LESER))
        assert response.status_code == 403, path
        assert response.json()["detail"].startswith("token 'leser' may not read domain ")
    for path in ("/v1/domains", "/v1/rejections", "/v1/whoami"):
        response = await client.get(path, headers=as_(GARTEN))  # a producer reads nothing
        assert response.status_code == 403
        assert response.json() == {"detail": "token 'garten-sensor' may not read any domain"}


async def test_rejections_show_only_readable_domains_and_carry_names(make) -> None:
    client = make()
    await client.post("/v1/ingest?domain=aussen", json={"n": 1}, headers=as_(GARTEN))  # 403
    await client.post("/v1/ingest?domain=keller", json={"n": 1}, headers=as_(GARTEN))  # 403
    await client.post("/v1/ingest", json={"n": 1}, headers=as_("nope"))  # 401, no domain
    seen_by_leser = (await client.get("/v1/rejections", headers=as_(LESER))).json()
    assert [(r["domain"], r["status"], r["token"]) for r in seen_by_leser["rejections"]] == [
        ("aussen", 403, "garten-sensor")]
    seen_by_voll = (await client.get("/v1/rejections", headers=as_(VOLL))).json()
    assert [(r["domain"], r["token"]) for r in seen_by_voll["rejections"]] == [
        (None, None), ("keller", "garten-sensor"), ("aussen", "garten-sensor")]
    assert seen_by_voll["rejections"][1]["reason"] == (
        "token 'garten-sensor' may not write domain 'keller'")


async def test_whoami_names_the_token_and_its_scope(make) -> None:
    client = make()
    me = await client.get("/v1/whoami", headers=as_(LESER))
    assert me.status_code == 200
    assert me.json() == {"name": "leser", "read": ["aussen"], "write": [], "rate_limit": None,
                         "expires": None}
    default = (await client.get("/v1/whoami")).json()
    assert (default["name"], default["read"], default["write"]) == ("default", ["*"], ["*"])


async def test_metrics_count_by_token_name_and_never_show_a_secret(make, caplog) -> None:
    client = make()
    caplog.set_level(logging.DEBUG)
    await client.post("/v1/ingest?domain=garten.a", json=[{"n": 1}, {"n": 2}],
                      headers=as_(GARTEN))
    await client.post("/v1/ingest?domain=keller", json={"n": 1}, headers=as_(GARTEN))
    await client.get("/v1/domains", headers=as_(LESER))
    await client.get("/v1/events?domain=garten.a", headers=as_(LESER))
    metrics = (await client.get("/metrics")).text
    assert 'leitstand_token_events_total{token="garten-sensor"} 2.0' in metrics
    assert 'leitstand_token_requests_total{token="garten-sensor"} 2.0' in metrics
    assert 'leitstand_token_requests_total{token="leser"} 2.0' in metrics
    assert ('leitstand_token_rejections_total{reason="forbidden",token="garten-sensor"} 1.0'
            in metrics)
    assert 'leitstand_token_rejections_total{reason="forbidden",token="leser"} 1.0' in metrics
    assert 'leitstand_tokens 5.0' in metrics  # LEITSTAND_TOKEN's and the file's four
    everything = metrics + caplog.text + (await client.get("/v1/rejections")).text
    for secret in (GARTEN, LESER, VOLL, TOKEN):
        assert secret not in everything
        assert hashlib.sha256(secret.encode()).hexdigest() not in everything


async def test_token_name_labels_are_capped(make_client, tmp_path) -> None:
    path = tmp_path / "many.toml"
    path.write_text("".join(entry(f"t{i}", f"s{i}", ["*"], []) for i in range(105)))
    client = make_client(tokens_file=path)
    for i in range(105):
        await client.post("/v1/ingest?domain=a", json={"n": i}, headers=as_(f"s{i}"))
    metrics = (await client.get("/metrics")).text
    labels = [line for line in metrics.splitlines()
              if line.startswith("leitstand_token_requests_total{")]
    assert len(labels) == 101  # 100 names and `other`
    assert 'leitstand_token_requests_total{token="other"} 5.0' in metrics


async def test_a_token_rate_limit_applies_on_top_of_the_ip_limit(make_client, tmp_path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(entry("langsam", "s1", ["*"], ["*"], 'rate_limit = "2/minute"')
                    + entry("schnell", "s2", ["*"], ["*"]))
    client = make_client(tokens_file=path)
    codes = [(await client.post("/v1/ingest?domain=a", json={}, headers=as_("s1"))).status_code
             for _ in range(3)]
    assert codes == [202, 202, 429]
    limited = await client.get("/v1/domains", headers=as_("s1"))  # one budget for all routes
    assert limited.status_code == 429
    assert limited.json()["detail"] == "rate limit of token 'langsam' exceeded"
    assert int(limited.headers["Retry-After"]) >= 1
    # The other token on the same IP is not slowed down.
    assert (await client.post("/v1/ingest?domain=a", json={}, headers=as_("s2"))).status_code \
        == 202


async def test_a_broken_reload_keeps_the_old_set_and_shows_in_health_and_metrics(
        make, tokens_file) -> None:
    client = make()
    assert (await client.get("/health")).json()["tokens"]["file"] == "ok"
    tokens_file.write_text(TOKENS + '[[token]]\nname = "kaputt"\n')
    watched = client.app.state.service.access.file  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while watched.error is None:
        assert time.monotonic() < deadline
        watched.check()
        time.sleep(0.05)
    health = (await client.get("/health")).json()
    assert health["status"] == "ok"
    line = TOKENS.count("\n") + 1
    assert health["tokens"]["error"].startswith(f"line {line}: sha256 must be")
    assert "tokens.toml" not in str(health)  # no path on an open endpoint
    metrics = (await client.get("/metrics")).text
    assert "leitstand_tokens_file_ok 0.0" in metrics
    assert "leitstand_tokens_reload_failures_total 1.0" in metrics
    assert (await client.get("/v1/domains", headers=as_(LESER))).status_code == 200


async def test_without_a_file_everything_is_as_before(client) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.post("/v1/ingest?domain=x", json={})).status_code == 202


async def test_scope_comes_before_the_schema_and_limits_the_schema_routes(make,
                                                                            tmp_path) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    strict = '{"type": "object", "required": ["temp"]}'
    for name in ("keller", "aussen", "garten.*", "*"):
        (schemas / f"{name}.schema.json").write_text(strict)
    client = make(schema_dir=schemas)
    # A token that may not write keller never learns keller's schema errors.
    denied = await client.post("/v1/ingest?domain=keller", json={"x": 1}, headers=as_(GARTEN))
    assert denied.status_code == 403
    invalid = await client.post("/v1/ingest?domain=garten.a", json={"x": 1}, headers=as_(GARTEN))
    assert invalid.status_code == 422
    assert (await client.get("/v1/schemas/garten.a", headers=as_(GARTEN))).status_code == 200
    assert (await client.get("/v1/schemas/keller", headers=as_(GARTEN))).status_code == 403
    assert (await client.get("/v1/schemas/aussen", headers=as_(LESER))).status_code == 200
    listed = (await client.get("/v1/schemas", headers=as_(GARTEN))).json()["schemas"]
    assert [s["name"] for s in listed] == ["garten.*"]
    listed = (await client.get("/v1/schemas", headers=as_(VOLL))).json()["schemas"]
    assert sorted(s["name"] for s in listed) == ["*", "aussen", "garten.*", "keller"]
