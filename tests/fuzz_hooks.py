"""Schemathesis hooks for the fuzz run (loaded via SCHEMATHESIS_HOOKS=tests.fuzz_hooks).

An NDJSON body is documented as a string (the raw text); schemathesis has no serializer for
`application/x-ndjson`, so generated text is sent as it is. A generated value that is not a
string (schemathesis sends such values to test that schema-violating bodies are rejected) has no
NDJSON spelling: it is sent as a NUL byte followed by its JSON, which is invalid on the wire too.
Without that, the object `{}` would be sent as the text `{}` — a valid NDJSON line.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b"\0" + json.dumps(value).encode()
