"""`leitstand schema check|infer`, `leitstand send` naming the first invalid line, and the Python
client's `RejectedError.errors` — the installed command and client against the real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from leitstand.client import Client, RejectedError
from testing import ServerProcess

from .conftest import TOKEN
from .test_cli import cli_env, run

SCHEMA = {"type": "object", "properties": {"temperature": {"type": "number"}},
          "required": ["temperature"]}


@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "schemas"
    directory.mkdir()
    (directory / "aussen.schema.json").write_text(json.dumps(SCHEMA))
    (directory / "garten.*.schema.json").write_text("true")
    return directory


@pytest.fixture
def server(start: Callable[..., ServerProcess], schema_dir: Path) -> ServerProcess:
    return start(env={"LEITSTAND_SCHEMA_DIR": str(schema_dir)})


def test_check_lists_the_files_and_what_applies(schema_dir: Path) -> None:
    result = run(["schema", "check", str(schema_dir), "--domain", "Garten.Beet",
                  "--domain", "innen"], cli_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("aussen.schema.json: ok (domain aussen, sha256 ")
    assert lines[1].startswith("garten.*.schema.json: ok (pattern garten.*, sha256 ")
    assert lines[2:] == ["Garten.Beet: garten.*.schema.json", "innen: no schema applies"]


def test_check_names_the_broken_file(schema_dir: Path) -> None:
    (schema_dir / "innen.schema.json").write_text('{"properties": {"t": {"$ref": "x.json"}}}')
    result = run(["schema", "check", str(schema_dir)], cli_env())
    assert result.returncode == 1
    assert "innen.schema.json: $ref 'x.json' cannot be resolved" in result.stderr
    missing = run(["schema", "check", str(schema_dir / "nope")], cli_env())
    assert missing.returncode == 2 and "is not a directory" in missing.stderr


def test_infer_proposes_a_schema_the_stored_events_match(
    start: Callable[..., ServerProcess], tmp_path: Path,
) -> None:
    from jsonschema import Draft202012Validator

    server = start()
    events = [{"temperature": 20.5, "room": "kueche"}, {"temperature": 21, "ok": True}]
    with Client(server.url, TOKEN) as client:
        client.send_many("innen", events)
    result = run(["schema", "infer", "--domain", "innen"], cli_env(server.url))
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["temperature"]["type"] in ("number", ["integer", "number"])
    assert set(schema["required"]) == {"temperature", "domain"}
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    assert all(validator.is_valid({**e, "domain": "innen"}) for e in events)
    assert not validator.is_valid({"room": "bad", "domain": "innen"})
    # a file of the schema directory the service accepts
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "innen.schema.json").write_text(result.stdout)
    assert run(["schema", "check", str(tmp_path / "s")], cli_env()).returncode == 0


def test_send_names_the_line_of_the_first_invalid_event(
    server: ServerProcess, tmp_path: Path,
) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text('{"temperature": 1}\n\n{"temperature": 2}\n\n'
                    '{"temperature": "warm"}\n{"temperature": []}\n')
    result = run(["send", "aussen", "--file", str(path)], cli_env(server.url))
    assert result.returncode == 1
    assert "HTTP 422" in result.stderr
    assert "the first invalid event is line 5" in result.stderr
    assert not (server.data_dir / "aussen.jsonl").exists()
    # stdin, small batches: the second batch holds the invalid event
    stdin = b'{"temperature": 1}\n{"temperature": 2}\n{"temperature": 3}\n{"nope": 4}\n'
    piped = run(["send", "aussen", "--batch-events", "2"], cli_env(server.url), stdin=stdin)
    assert piped.returncode == 1
    assert "the first invalid event is line 4" in piped.stderr


def test_client_rejected_error_carries_the_errors(server: ServerProcess) -> None:
    with Client(server.url, TOKEN) as client, pytest.raises(RejectedError) as caught:
        client.send_many("aussen", [{"temperature": 1}, {"temperature": "warm"}])
    assert caught.value.status == 422
    assert caught.value.errors == [
        {"index": 1, "path": "/temperature", "message": "'warm' is not of type 'number'"}]
    with Client(server.url, TOKEN) as client, pytest.raises(RejectedError) as other:
        client.send("-bad-", {"x": 1})
    assert other.value.status == 400 and other.value.errors == []
