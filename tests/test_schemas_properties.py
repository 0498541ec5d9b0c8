"""Property: for random simple schemas and random batches of events, leitstand's answer equals
the verdict of the `jsonschema` library on each event as stored (with `domain`): 202 and the
events stored unchanged, or 422 with the library's errors (index and path, in order, at most
20) and their total, and nothing stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from leitstand.app import create_app
from leitstand.config import Settings
from leitstand.schemas import MAX_LISTED, json_pointer

from .conftest import TOKEN

DOMAIN = "prop"
NAMES = ["a", "b", "c", "n", "x/y", "t~"]  # `/` and `~` must be escaped in paths

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=64), text)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(NAMES), inner, max_size=3)),
    max_leaves=6)
events = st.dictionaries(st.sampled_from(NAMES), values, max_size=5)


@st.composite
def property_schemas(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(
        ["integer", "number", "string", "boolean", "null", "array", "object", None]))
    schema: dict[str, Any] = {} if kind is None else {"type": kind}
    if kind in ("integer", "number"):
        if draw(st.booleans()):
            schema["minimum"] = draw(st.integers(-5, 5))
        if draw(st.booleans()):
            schema["maximum"] = draw(st.integers(0, 10))
    elif kind == "string":
        if draw(st.booleans()):
            schema["maxLength"] = draw(st.integers(0, 4))
        if draw(st.booleans()):
            schema["format"] = draw(st.sampled_from(["date-time", "ipv4", "uuid"]))
    elif kind == "array" and draw(st.booleans()):
        schema["items"] = {"type": draw(st.sampled_from(["integer", "string"]))}
    elif kind is None and draw(st.booleans()):
        schema["enum"] = draw(st.lists(scalars, min_size=1, max_size=3))
    return schema


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    schema: dict[str, Any] = {"type": "object",
                              "properties": {n: draw(property_schemas()) for n in names}}
    if names:
        schema["required"] = draw(st.lists(st.sampled_from(names), unique=True))
    if draw(st.booleans()):
        schema["additionalProperties"] = draw(st.booleans()) or {"type": "integer"}
        schema["properties"]["domain"] = {"type": "string"}
    return schema


def test_answer_equals_the_libraries_verdict(tmp_path: Path) -> None:
    schema_dir = tmp_path / "schemas"
    schema_dir.mkdir()
    schema_file = schema_dir / f"{DOMAIN}.schema.json"
    schema_file.write_text("{}")
    data_dir = tmp_path / "data"
    app = create_app(Settings(_env_file=None, token=TOKEN, data_dir=data_dir,  # type: ignore[call-arg]
                              rate_limit="1000000/second", schema_dir=schema_dir))
    schemas_in_force = app.state.service.schemas
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                               headers={"X-Auth": TOKEN})
    stored = data_dir / f"{DOMAIN}.jsonl"

    @settings(max_examples=200, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    # Repeating the batch makes more than 20 errors common: past 20, the errors are counted by
    # jsonschema-rs, and the count must still be jsonschema's.
    @given(schema=schemas(), batch=st.lists(events, min_size=1, max_size=30),
           repeat=st.sampled_from([1, 1, 4]))
    def check(schema: dict[str, Any], batch: list[dict[str, Any]], repeat: int) -> None:
        batch = batch * repeat
        schema_file.write_text(json.dumps(schema))
        assert schemas_in_force.reload()  # what SIGHUP does
        assert schemas_in_force.for_domain(DOMAIN).fast is not None  # both validators run
        validator = Draft202012Validator(schema,
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        as_stored = [{**event, "domain": DOMAIN} for event in batch]
        expected = [{"index": i, "path": json_pointer(e.absolute_path), "message": e.message}
                    for i, event in enumerate(as_stored) for e in validator.iter_errors(event)]
        size_before = stored.stat().st_size if stored.exists() else 0

        response = portal.call(lambda: client.post(
            f"/v1/ingest?domain={DOMAIN}", content=orjson.dumps(batch),
            headers={"Content-Type": "application/json"}))

        size_after = stored.stat().st_size if stored.exists() else 0
        if not expected:
            assert response.status_code == 202, response.text
            written = stored.read_bytes()[size_before:].splitlines()
            assert [orjson.loads(line) for line in written] == as_stored
        else:
            assert response.status_code == 422, response.text
            answer = response.json()
            assert answer["error_count"] == len(expected)
            assert [(e["index"], e["path"]) for e in answer["errors"]] == [
                (e["index"], e["path"]) for e in expected[:MAX_LISTED]]
            assert [e["message"] for e in answer["errors"]] == [
                e["message"][:300] + ("…" if len(e["message"]) > 300 else "")
                for e in expected[:MAX_LISTED]]
            assert size_after == size_before

    # One event loop (in a thread) for the whole run, as the app's store expects.
    with anyio.from_thread.start_blocking_portal() as portal:
        try:
            check()
        finally:
            portal.call(client.aclose)
            portal.call(app.state.service.store.close)
