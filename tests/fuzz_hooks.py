"""Schemathesis hooks for the fuzz run (loaded via SCHEMATHESIS_HOOKS=tests.fuzz_hooks).

NDJSON bodies are documented as a string (the raw text); schemathesis has no serializer for
`application/x-ndjson`, so the generated text is sent as it is, like `text/plain`.
"""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
