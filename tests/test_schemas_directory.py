"""LEITSTAND_SCHEMA_DIR as files: names and patterns, precedence, `$ref`s (never remote), broken
files, and the `Reloadable` that keeps the last good set (no server, no timing)."""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from leitstand.metrics import Metrics
from leitstand.reloading import Reloadable, stat_fingerprint
from leitstand.schemas import SchemaDirError, SchemaRejected, Schemas, json_pointer, load_directory

NUMBER_SCHEMA = {"type": "object", "properties": {"temperature": {"type": "number"}},
                 "required": ["temperature"]}


def write(directory: Path, name: str, document: object) -> Path:
    path = directory / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def test_exact_beats_pattern_and_longest_pattern_wins(tmp_path: Path) -> None:
    write(tmp_path, "*.schema.json", True)
    write(tmp_path, "garten.*.schema.json", True)
    write(tmp_path, "garten.beet.*.schema.json", True)
    write(tmp_path, "garten.beet.nord.schema.json", True)
    schemas = load_directory(tmp_path)
    assert schemas.for_domain("garten.beet.nord").file == "garten.beet.nord.schema.json"
    assert schemas.for_domain("garten.beet.sued").file == "garten.beet.*.schema.json"
    assert schemas.for_domain("garten.rasen").file == "garten.*.schema.json"
    assert schemas.for_domain("garten").file == "*.schema.json"  # `garten.*` needs the dot
    assert schemas.for_domain("aussen").file == "*.schema.json"
    assert [s.name for s in schemas] == ["*", "garten.*", "garten.beet.*", "garten.beet.nord"]


def test_equally_long_patterns_the_first_by_name_wins(tmp_path: Path) -> None:
    write(tmp_path, "b.*.schema.json", True)
    write(tmp_path, "*.b.schema.json", True)
    assert load_directory(tmp_path).for_domain("b.b").name == "*.b"


def test_no_schema_no_match(tmp_path: Path) -> None:
    write(tmp_path, "aussen.schema.json", NUMBER_SCHEMA)
    schemas = load_directory(tmp_path)
    assert schemas.for_domain("innen") is None
    assert schemas.for_domain("aussen.sub") is None


def test_summary_has_the_files_sha256(tmp_path: Path) -> None:
    import hashlib

    path = write(tmp_path, "aussen.schema.json", NUMBER_SCHEMA)
    (schema,) = load_directory(tmp_path)
    assert schema.summary() == {"name": "aussen", "kind": "domain", "file": path.name,
                                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


@pytest.mark.parametrize(("name", "content", "message"), [
    ("aussen.schema.json", "{not json", "aussen.schema.json: invalid JSON"),
    ("aussen.schema.json", '{"type": "nonsense"}', "aussen.schema.json: not a valid schema"),
    ("aussen.schema.json", '{"properties": {"a": {"minimum": "3"}}}',
     "aussen.schema.json: not a valid schema at /properties/a/minimum"),
    ("aussen.schema.json", "[1, 2]", "a schema is a JSON object"),
    ("aussen.schema.json", '{"$schema": "http://json-schema.org/draft-07/schema#"}',
     "only draft 2020-12"),
    ("Aussen.schema.json", "{}", "Aussen.schema.json: the name must be"),
    ("garten?.schema.json", "{}", "the name must be"),
    ("-x.schema.json", "{}", "the name must be"),
    ("shared.json", "{broken", "shared.json: invalid JSON"),
])
def test_broken_file_is_named(tmp_path: Path, name: str, content: str, message: str) -> None:
    write(tmp_path, "ok.schema.json", NUMBER_SCHEMA)
    write(tmp_path, name, content)
    with pytest.raises(SchemaDirError, match=message.replace("?", r"\?").replace("$", r"\$")):
        load_directory(tmp_path)


def test_ref_to_a_file_in_the_directory(tmp_path: Path) -> None:
    write(tmp_path, "units.json", {"$defs": {"celsius": {"type": "number", "minimum": -273.15}}})
    write(tmp_path, "aussen.schema.json", {
        "type": "object", "properties": {"t": {"$ref": "units.json#/$defs/celsius"}}})
    validator = load_directory(tmp_path).for_domain("aussen").validator
    assert validator.is_valid({"t": 20})
    assert not validator.is_valid({"t": -300})
    assert not validator.is_valid({"t": "warm"})


def test_ref_by_id_of_a_file_in_the_directory(tmp_path: Path) -> None:
    write(tmp_path, "common.json", {"$id": "https://example.invalid/common", "type": "string"})
    write(tmp_path, "aussen.schema.json", {"properties": {"host": {
        "$ref": "https://example.invalid/common"}}})
    validator = load_directory(tmp_path).for_domain("aussen").validator
    assert validator.is_valid({"host": "a"}) and not validator.is_valid({"host": 1})


def test_missing_local_ref_refuses_the_directory(tmp_path: Path) -> None:
    write(tmp_path, "aussen.schema.json", {"properties": {"t": {"$ref": "nowhere.json"}}})
    with pytest.raises(SchemaDirError, match=r"aussen.schema.json: \$ref 'nowhere.json' cannot"):
        load_directory(tmp_path)


def test_remote_ref_is_never_fetched(tmp_path: Path) -> None:
    """A server on loopback that would serve the schema: it must get no request at all."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            body = b'{"type": "number"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/number.json"
        write(tmp_path, "aussen.schema.json", {"properties": {"t": {"$ref": url}}})
        with pytest.raises(SchemaDirError, match="nothing is fetched"):
            load_directory(tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
    assert requests == []


def test_ref_inside_data_keywords_is_data(tmp_path: Path) -> None:
    write(tmp_path, "aussen.schema.json", {"const": {"$ref": "not-a-ref"}})
    assert load_directory(tmp_path).for_domain("aussen").validator.is_valid({"$ref": "not-a-ref"})


def test_format_is_checked(tmp_path: Path) -> None:
    write(tmp_path, "aussen.schema.json", {"properties": {"at": {"format": "date-time"},
                                                          "ip": {"format": "ipv4"}}})
    validator = load_directory(tmp_path).for_domain("aussen").validator
    assert validator.is_valid({"at": "2026-12-03T08:00:00Z", "ip": "10.0.0.1"})
    assert not validator.is_valid({"at": "yesterday"})
    assert not validator.is_valid({"ip": "10.0.0.300"})


def test_json_pointer_escapes() -> None:
    assert json_pointer([]) == ""
    assert json_pointer(["a", 0, "b/c", "d~e"]) == "/a/0/b~1c/d~0e"


def test_check_lists_at_most_20_errors_and_counts_all(tmp_path: Path) -> None:
    write(tmp_path, "aussen.schema.json", NUMBER_SCHEMA)
    schemas = Schemas(tmp_path, Metrics())
    events = [{"temperature": 1, "domain": "aussen"}] * 3 + [
        {"temperature": f"warm{i}", "domain": "aussen"} for i in range(30)]
    with pytest.raises(SchemaRejected) as caught:
        schemas.check("aussen", events)
    errors = caught.value.extra["errors"]
    assert caught.value.status == 422
    assert caught.value.extra["error_count"] == 30
    assert len(errors) == 20
    assert errors[0] == {"index": 3, "path": "/temperature",
                         "message": "'warm0' is not of type 'number'"}
    assert "30 of 33 events" in caught.value.detail
    schemas.check("aussen", events[:3])  # valid: no error
    schemas.check("innen", events)  # no schema: not checked


def test_check_does_not_change_the_events(tmp_path: Path) -> None:
    write(tmp_path, "aussen.schema.json", {"properties": {"n": {"type": "integer",
                                                                "default": 5}}})
    schemas = Schemas(tmp_path, Metrics())
    events = [{"domain": "aussen"}, {"n": 1.0, "domain": "aussen"}]
    schemas.check("aussen", events)
    assert events == [{"domain": "aussen"}, {"n": 1.0, "domain": "aussen"}]


def test_the_fast_validator_is_built_with_refs_and_never_stricter_on_formats(
    tmp_path: Path,
) -> None:
    write(tmp_path, "units.json", {"$defs": {"celsius": {"type": "number"}}})
    write(tmp_path, "aussen.schema.json", {"properties": {
        "t": {"$ref": "units.json#/$defs/celsius"},
        "link": {"format": "uri"}, "took": {"format": "duration"},  # not checked by jsonschema
        "at": {"format": "date-time"}}})
    schema = load_directory(tmp_path).for_domain("aussen")
    assert schema.fast is not None
    assert schema.fast.is_valid({"t": 1.5, "link": "not a uri", "took": "long"})
    assert not schema.fast.is_valid({"t": "warm"})
    assert not schema.fast.is_valid({"at": "yesterday"})
    schemas = Schemas(tmp_path, Metrics())
    schemas.check("aussen", [{"link": "not a uri", "took": "long", "domain": "aussen"}])


def test_the_reference_decides_when_the_fast_validator_rejects(tmp_path: Path) -> None:
    """Were jsonschema-rs ever stricter than jsonschema, the event is still stored."""

    class Stricter:
        def is_valid(self, instance: object) -> bool:
            return False

    write(tmp_path, "aussen.schema.json", NUMBER_SCHEMA)
    schemas = Schemas(tmp_path, Metrics())
    domain_schema = schemas.for_domain("aussen")
    object.__setattr__(domain_schema, "fast", Stricter())
    schemas.check("aussen", [{"temperature": 1, "domain": "aussen"}])  # accepted
    with pytest.raises(SchemaRejected):
        schemas.check("aussen", [{"temperature": "x", "domain": "aussen"}])


def test_a_large_invalid_batch_costs_the_reference_only_the_listed_events(
    tmp_path: Path,
) -> None:
    """The slow reference explains the first 20 errors; the fast validator counts the rest."""
    write(tmp_path, "aussen.schema.json", NUMBER_SCHEMA)
    schemas = Schemas(tmp_path, Metrics())
    domain_schema = schemas.for_domain("aussen")
    reference = domain_schema.validator
    looked_at: list[object] = []

    class Spy:
        def iter_errors(self, instance: object) -> object:
            looked_at.append(instance)
            return reference.iter_errors(instance)

    object.__setattr__(domain_schema, "validator", Spy())
    events = [{"temperature": 1, "domain": "aussen"}] * 100 + [
        {"temperature": str(i), "domain": "aussen"} for i in range(5000)]
    with pytest.raises(SchemaRejected) as caught:
        schemas.check("aussen", events)
    assert caught.value.extra["error_count"] == 5000
    assert len(caught.value.extra["errors"]) == 20
    assert caught.value.extra["errors"][0]["index"] == 100
    assert len(looked_at) == 20
    assert "5000 of 5100 events" in caught.value.detail


# -- Reloadable ------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reloadable_looks_at_the_files_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "value"
    path.write_text("1")
    looks = []
    clock = Clock()

    def fingerprint() -> object:
        looks.append(clock.now)
        return stat_fingerprint(tmp_path)

    value = Reloadable("test", lambda: int(path.read_text()), fingerprint, interval=2.0,
                       clock=clock)
    assert value.current() == 1 and len(looks) == 1
    path.write_text("22")
    assert value.current() == 1 and len(looks) == 1  # not looked yet: within the interval
    clock.now = 2.0
    assert value.current() == 22 and len(looks) >= 2
    before = len(looks)
    clock.now = 3.0
    assert value.current() == 22 and len(looks) == before


def test_reloadable_keeps_the_old_value_on_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "value"
    path.write_text("1")
    clock = Clock()
    value = Reloadable("test", lambda: int(path.read_text()),
                       lambda: stat_fingerprint(tmp_path), interval=1.0, clock=clock)
    path.write_text("not a number")
    clock.now = 1.0
    assert value.current() == 1
    assert value.error is not None and "invalid literal" in value.error
    assert value.failures == 1
    clock.now = 2.0
    assert value.current() == 1 and value.failures == 1  # unchanged files: not tried again
    path.write_text("3")
    os.utime(path, ns=(1, 1))  # even with an old mtime, the size/inode changed
    clock.now = 3.0
    assert value.current() == 3 and value.error is None


def test_reloadable_reload_forces_a_load(tmp_path: Path) -> None:
    count = iter(range(100))
    value = Reloadable("test", lambda: next(count), lambda: "same", interval=1000.0)
    assert value.value == 0
    assert value.reload() is True and value.value == 1


def test_reloadable_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Reloadable("test", lambda: int("x"), lambda: 1)
