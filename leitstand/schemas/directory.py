"""LEITSTAND_SCHEMA_DIR: one JSON Schema (draft 2020-12) per domain or pattern of domains.

File names:
- `<domain>.schema.json` applies to exactly that (normalised) domain, e.g. `aussen.schema.json`.
- A name with `*` is a pattern; `*` stands for any characters, dots included:
  `garten.*.schema.json` covers `garten.beet` and `garten.beet.nord`; `*.schema.json` covers
  every domain.
- Which one applies: an exact file beats every pattern; among matching patterns the longest
  name wins (the most specific), and between equally long ones the one that sorts first.
- Every other `*.json` file in the directory is a shared document that schemas may `$ref`
  (relative to their own file, e.g. `"$ref": "units.json#/$defs/celsius"`, or by its `$id`).
  A `$ref` is never fetched from the network: one that no file of the directory provides makes
  the directory invalid.

Every schema is checked and its validators built once, when the directory is loaded.

Two validators per schema: `jsonschema` (Python) is the reference — it decides what is
rejected and explains why — and `jsonschema-rs` (compiled, in Rust, ~80x faster per event,
bench/notes.md) answers the common question "is this whole batch valid?". A batch the fast one
accepts is stored; anything else goes to the reference, which rejects only what it finds
errors in. The fast one is told to accept every format the reference does not check, so that
it is never stricter; a schema it cannot build is checked by the reference alone.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import jsonschema_rs
import orjson
import referencing.exceptions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from ..domains import normalize_domain
from ..errors import InvalidDomain

SUFFIX = ".schema.json"
DRAFT_URIS = frozenset({
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
})
# Keywords whose values are data, not schemas: a "$ref" key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "examples", "default"})
_MAX_FILE = 4 * 1024 * 1024
_CACHE_LIMIT = 10_000
FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER
# Formats jsonschema-rs knows but the reference does not check: the fast validator accepts them.
_RS_FORMATS = ("date", "date-time", "time", "duration", "email", "idn-email", "hostname",
               "idn-hostname", "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference",
               "uuid", "uri-template", "json-pointer", "relative-json-pointer", "regex")
_UNCHECKED_FORMATS = {name: (lambda _value: True) for name in _RS_FORMATS
                      if name not in FORMAT_CHECKER.checkers}


class SchemaDirError(Exception):
    """The directory (or one file in it) cannot be used; the message names the file."""


@dataclass(frozen=True)
class DomainSchema:
    """One `*.schema.json`: the domain or pattern it covers, and its validator."""

    name: str  # the domain, or the pattern with `*`
    file: str
    sha256: str
    document: Any  # the schema as written in the file
    validator: Draft202012Validator = field(repr=False, compare=False)  # the reference
    fast: Any = field(default=None, repr=False, compare=False)  # jsonschema-rs, if it builds

    @property
    def is_pattern(self) -> bool:
        return "*" in self.name

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "pattern" if self.is_pattern else "domain",
                "file": self.file, "sha256": self.sha256}


class SchemaSet:
    """The schemas of one load of the directory, and which applies to a domain."""

    def __init__(self, schemas: list[DomainSchema]) -> None:
        self.exact = {s.name: s for s in schemas if not s.is_pattern}
        # Most specific first: longest pattern, then by name.
        self.patterns = sorted((s for s in schemas if s.is_pattern),
                               key=lambda s: (-len(s.name), s.name))
        self._regexes = [re.compile(fnmatch.translate(s.name)) for s in self.patterns]
        self._cache: dict[str, DomainSchema | None] = {}

    def __len__(self) -> int:
        return len(self.exact) + len(self.patterns)

    def __iter__(self) -> Iterator[DomainSchema]:
        return iter(sorted([*self.exact.values(), *self.patterns], key=lambda s: s.name))

    def for_domain(self, domain: str) -> DomainSchema | None:
        """The schema that applies to the normalised `domain`, or None."""
        try:
            return self._cache[domain]
        except KeyError:
            pass
        found = self.exact.get(domain)
        if found is None:
            found = next((s for s, rx in zip(self.patterns, self._regexes, strict=True)
                          if rx.match(domain)), None)
        if len(self._cache) >= _CACHE_LIMIT:  # many distinct domains: start over
            self._cache.clear()
        self._cache[domain] = found
        return found


def load_directory(directory: Path) -> SchemaSet:
    """Read, check and compile every schema in `directory`; raise `SchemaDirError` naming the
    first file that cannot be used."""
    try:
        paths = sorted(p for p in directory.iterdir() if p.name.endswith(".json"))
    except OSError as exc:
        raise SchemaDirError(f"{directory}: cannot list: {exc.strerror or exc}") from exc
    documents = {path: _read_json(path) for path in paths}
    fast_registry = _fast_registry(documents)
    registry: Registry[Any] = Registry().with_resources(
        (path.resolve().as_uri(), Resource.from_contents(doc, default_specification=DRAFT202012))
        for path, (doc, _) in documents.items()
        if isinstance(doc, (dict, bool))
    )
    try:
        registry = registry.crawl()
    except referencing.exceptions.Unresolvable as exc:  # pragma: no cover - defensive
        raise SchemaDirError(f"{directory}: {exc}") from exc
    schemas = []
    for path, (document, raw) in documents.items():
        if path.name.endswith(SUFFIX):
            schemas.append(_compile(path, document, raw, registry, fast_registry))
        elif isinstance(document, dict):
            _check_refs(path, document, path.resolve().as_uri(), registry)
    return SchemaSet(schemas)


def _read_json(path: Path) -> tuple[Any, bytes]:
    try:
        if path.stat().st_size > _MAX_FILE:
            raise SchemaDirError(f"{path.name}: larger than {_MAX_FILE} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise SchemaDirError(f"{path.name}: cannot read: {exc.strerror or exc}") from exc
    try:
        return orjson.loads(raw), raw
    except orjson.JSONDecodeError as exc:
        raise SchemaDirError(f"{path.name}: invalid JSON: {exc}") from exc


def _compile(path: Path, document: Any, raw: bytes, registry: Registry[Any],
             fast_registry: Any) -> DomainSchema:
    name = _covered_name(path)
    if not isinstance(document, (dict, bool)):
        raise SchemaDirError(f"{path.name}: a schema is a JSON object (or true/false)")
    if isinstance(document, dict):
        declared = document.get("$schema")
        if declared is not None and declared not in DRAFT_URIS:
            raise SchemaDirError(f"{path.name}: $schema is {declared!r}; only draft 2020-12 "
                                 "(https://json-schema.org/draft/2020-12/schema) is supported")
    try:
        Draft202012Validator.check_schema(document)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise SchemaDirError(f"{path.name}: not a valid schema"
                             f"{' at /' + where if where else ''}: {exc.message}") from exc
    uri = path.resolve().as_uri()
    if isinstance(document, dict):
        _check_refs(path, document, uri, registry)
    # Relative `$ref`s resolve against the file itself: give the validated copy the file's URI
    # as its base (the document served by GET /v1/schemas/{domain} stays as written).
    rooted = {"$id": uri, **document} if isinstance(document, dict) else document
    validator = Draft202012Validator(rooted, registry=registry, format_checker=FORMAT_CHECKER)
    return DomainSchema(name=name, file=path.name, sha256=hashlib.sha256(raw).hexdigest(),
                        document=document, validator=validator,
                        fast=_fast_validator(document, uri, fast_registry))


def _fast_registry(documents: dict[Path, tuple[Any, bytes]]) -> Any:
    try:
        return jsonschema_rs.Registry([(path.resolve().as_uri(), doc)
                                       for path, (doc, _) in documents.items()
                                       if isinstance(doc, dict)], retriever=_never_fetch)
    except Exception:  # the reference alone then (it reports real errors itself)
        return None


def _never_fetch(uri: str) -> Any:
    raise LookupError(f"{uri} is not a file of the schema directory (nothing is fetched)")


def _fast_validator(document: Any, uri: str, fast_registry: Any) -> Any:
    """jsonschema-rs for `document`, offline (nothing fetched), never stricter on formats than
    the reference; None if it cannot build this schema."""
    if fast_registry is None:
        return None
    try:
        return jsonschema_rs.Draft202012Validator(
            document, registry=fast_registry, base_uri=uri, offline=True,
            validate_formats=True, formats=_UNCHECKED_FORMATS)
    except Exception:
        return None


def _covered_name(path: Path) -> str:
    """The domain or pattern a file name covers; refuses names that could never match."""
    name = path.name[: -len(SUFFIX)]
    probe = name.replace("*", "x")
    try:
        valid = bool(name) and normalize_domain(probe) == probe
    except InvalidDomain:
        valid = False
    if not valid:
        raise SchemaDirError(
            f"{path.name}: the name must be <domain>{SUFFIX} or a pattern with * "
            f"(lowercase domain rules, e.g. garten.*{SUFFIX})")
    return name


def _check_refs(path: Path, node: Any, base: str, registry: Registry[Any]) -> None:
    """Every `$ref`/`$dynamicRef` must resolve within the directory now, not at the first event."""
    if isinstance(node, list):
        for item in node:
            _check_refs(path, item, base, registry)
        return
    if not isinstance(node, dict):
        return
    own_id = node.get("$id")
    if isinstance(own_id, str):
        base = urljoin(base, own_id)
    for keyword in ("$ref", "$dynamicRef"):
        ref = node.get(keyword)
        if isinstance(ref, str):
            try:
                registry.resolver(base_uri=base).lookup(ref)
            except referencing.exceptions.Unresolvable as exc:
                raise SchemaDirError(
                    f"{path.name}: {keyword} {ref!r} cannot be resolved: only files in the "
                    f"schema directory are used, nothing is fetched ({type(exc).__name__})"
                ) from exc
    for key, value in node.items():
        if key not in _DATA_KEYWORDS:
            _check_refs(path, value, base, registry)
