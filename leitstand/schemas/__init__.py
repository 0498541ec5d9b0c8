"""Per-domain JSON Schemas (LEITSTAND_SCHEMA_DIR): which files there are (directory.py), and
the service's view of them here — reloaded on change and on SIGHUP, checking batches on ingest.

A batch is checked after decoding (each event as it will be stored, `domain` included) and
before the store; one invalid event rejects the whole batch with 422 and the first errors.
Nothing is changed in an event: no defaults filled in, no coercion.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import referencing.exceptions
from prometheus_client import Counter, Gauge

from ..config import refuse_to_start
from ..errors import SchemaNotApplicable, SchemaRejected
from ..metrics import Metrics
from ..reloading import Reloadable, on_sighup, stat_fingerprint
from .directory import SUFFIX, DomainSchema, SchemaDirError, SchemaSet, load_directory

__all__ = [
    "MAX_LISTED",
    "SUFFIX",
    "DomainSchema",
    "SchemaDirError",
    "SchemaRejected",
    "SchemaSet",
    "Schemas",
    "json_pointer",
    "load_directory",
    "open_schemas",
]

MAX_LISTED = 20  # errors listed in a 422 answer; `error_count` gives the total
_MAX_MESSAGE = 300
RELOAD_INTERVAL = 2.0  # seconds between two looks at the directory (on the request path)


def open_schemas(directory: Path | None, metrics: Metrics) -> Schemas | None:
    """The schemas of LEITSTAND_SCHEMA_DIR (None if unset); a file that cannot be used stops
    the start with a message naming it (exit status 2, like an invalid setting)."""
    if directory is None:
        return None
    try:
        return Schemas(directory, metrics)
    except SchemaDirError as exc:
        refuse_to_start(f"LEITSTAND_SCHEMA_DIR is invalid: {exc}")


class Schemas:
    """The schema directory of a running service."""

    def __init__(self, directory: Path, metrics: Metrics, *,
                 interval: float = RELOAD_INTERVAL) -> None:
        self.directory = directory
        self._domain_label = metrics.domain_label
        r = metrics.registry
        self.rejections = Counter(
            "leitstand_schema_rejections",
            "Requests rejected because events did not match their domain's schema, by domain.",
            ["domain"], registry=r)
        self.reload_failures = Counter(
            "leitstand_schema_reload_failures",
            "Reloads of LEITSTAND_SCHEMA_DIR that failed (the previous schemas stayed in force).",
            registry=r)
        # A failed reload raises SchemaDirError here: the caller refuses to start.
        self._files: Reloadable[SchemaSet] = Reloadable(
            f"LEITSTAND_SCHEMA_DIR ({directory})",
            lambda: load_directory(directory),
            lambda: stat_fingerprint(directory),
            interval=interval,
            on_change=self._changed,
        )
        # Scraping /metrics also looks for changed files, so a broken edit shows up even
        # without ingest traffic.
        Gauge("leitstand_schema_reload_failed",
              "1 while the newest files in LEITSTAND_SCHEMA_DIR are refused (see the log and "
              "GET /v1/schemas); the previous schemas are in force.",
              registry=r).set_function(lambda: 1.0 if self.error else 0.0)
        Gauge("leitstand_schemas", "Schema files in force (domains and patterns).",
              registry=r).set_function(lambda: float(len(self.current())))

    def _changed(self, _value: SchemaSet, error: str | None) -> None:
        if error is not None:
            self.reload_failures.inc()

    @property
    def error(self) -> str | None:
        """Why the newest files are refused (None: what is in the directory is in force)."""
        self._files.current()
        return self._files.error

    def current(self) -> SchemaSet:
        return self._files.current()

    def health(self) -> dict[str, Any]:
        return {"in_force": len(self.current()), "reload_error": self.error}

    def reload(self) -> bool:
        """Load the directory now (SIGHUP); False if it was refused (the old schemas stay)."""
        return self._files.reload()

    def reload_on_sighup(self) -> bool:
        return on_sighup(self.reload)

    def for_domain(self, domain: str) -> DomainSchema | None:
        return self._files.current().for_domain(domain)

    def file_for(self, domain: str) -> str | None:
        """The schema file that applies to `domain` (None: its events are not checked)."""
        found = self.for_domain(domain)
        return None if found is None else found.file

    def check(self, domain: str, events: Sequence[Any]) -> None:
        """Raise `SchemaRejected` if any event does not match the schema of `domain`."""
        schema = self._files.current().for_domain(domain)
        if schema is None:
            return
        try:
            listed, total, invalid = _find_errors(schema, events)
        except referencing.exceptions.Unresolvable as exc:
            raise SchemaNotApplicable(f"the schema {schema.file} cannot be applied: {exc}") from exc
        if not total:
            return  # the reference finds nothing wrong: it decides
        self.rejections.labels(self._domain_label(domain)).inc()
        first = listed[0]
        raise SchemaRejected(
            f"{invalid} of {len(events)} events do not match the schema for {domain!r} "
            f"({schema.file}); nothing was stored. First: event {first['index']} at "
            f"{first['path'] or '/'}: {first['message']}",
            extra={"errors": listed, "error_count": total},
        )


def _find_errors(schema: DomainSchema, events: Sequence[Any]
                 ) -> tuple[list[dict[str, Any]], int, int]:
    """The first MAX_LISTED errors, the number of all errors, and of invalid events.

    The fast validator picks the suspects (none: done, the common case); the reference looks at
    them in order and decides. Once MAX_LISTED errors are listed, the fast validator counts the
    rest: a 10,000-event batch of invalid events costs ~20 reference checks, not 10,000
    (~100 us each, on the event loop)."""
    fast = schema.fast
    suspects: Sequence[int] = range(len(events))
    if fast is not None:
        try:
            suspects = [i for i, event in enumerate(events) if not fast.is_valid(event)]
        except ValueError:
            fast = None  # the reference alone
    listed: list[dict[str, Any]] = []
    total = invalid = 0
    for n, index in enumerate(suspects):
        if fast is not None and len(listed) >= MAX_LISTED:
            rest = suspects[n:]
            total += sum(sum(1 for _ in fast.iter_errors(events[i])) for i in rest)
            invalid += len(rest)
            break
        found = 0
        for error in schema.validator.iter_errors(events[index]):
            found += 1
            if len(listed) < MAX_LISTED:
                listed.append({"index": index, "path": json_pointer(error.absolute_path),
                               "message": _short(error.message)})
        total += found
        invalid += found > 0
    return listed, total, invalid


def json_pointer(parts: Sequence[Any]) -> str:
    """RFC 6901: `["a", 0, "b/c"]` → `/a/0/b~1c`; the whole event is ``""``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"
