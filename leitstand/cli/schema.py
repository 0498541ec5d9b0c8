"""`leitstand schema check DIR` (is a schema directory usable?) and `leitstand schema infer`
(a draft schema from a domain's stored events, via the read API and `genson`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import orjson

from .common import UsageError, add_connection_options, client_for

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def register(commands: Any) -> None:
    schema = commands.add_parser("schema", help="check a schema directory, or draft a schema",
                                 description="Per-domain JSON Schemas (LEITSTAND_SCHEMA_DIR).")
    actions = schema.add_subparsers(dest="action", required=True, metavar="ACTION")

    check = actions.add_parser("check", help="check every file of a schema directory",
                               description="Load DIR as the service would (names, JSON, draft "
                               "2020-12, $ref within DIR) and list what applies to which "
                               "domains. Exit status 1 with the file and the error if the "
                               "service would refuse it.")
    check.add_argument("dir", type=Path)
    check.add_argument("--domain", action="append", default=[],
                       help="also show which schema applies to this domain (repeatable)")
    check.set_defaults(run=run_check)

    infer = actions.add_parser("infer", help="propose a schema from a domain's stored events",
                               description="Read the last events of DOMAIN (read API) and print "
                               "a JSON Schema that all of them match, as a draft to edit "
                               "(genson: types, and `required` for fields present in every "
                               "event).")
    infer.add_argument("--domain", required=True)
    infer.add_argument("-n", "--events", type=int, default=1000,
                       help="how many of the last events to learn from (default 1000)")
    add_connection_options(infer)
    infer.set_defaults(run=run_infer)


def run_check(args: argparse.Namespace) -> int:
    from ..schemas import SchemaDirError, load_directory

    if not args.dir.is_dir():
        raise UsageError(f"{args.dir} is not a directory")
    try:
        schemas = load_directory(args.dir)
    except SchemaDirError as exc:
        print(f"leitstand: {args.dir}: {exc}", file=sys.stderr)
        return 1
    for schema in schemas:
        print(f"{schema.file}: ok ({'pattern' if schema.is_pattern else 'domain'} "
              f"{schema.name}, sha256 {schema.sha256[:12]})")
    if not len(schemas):
        print(f"{args.dir}: no *.schema.json files (no domain is checked)")
    for domain in args.domain:
        found = schemas.for_domain(_normalized(domain))
        print(f"{domain}: {found.file if found else 'no schema applies'}")
    return 0


def _normalized(domain: str) -> str:
    from ..domains import normalize_domain
    from ..errors import InvalidDomain

    try:
        return normalize_domain(domain)
    except InvalidDomain as exc:
        raise UsageError(f"--domain {domain!r}: {exc.detail}") from None


def run_infer(args: argparse.Namespace) -> int:
    from genson import SchemaBuilder

    if args.events < 1:
        raise UsageError("-n must be 1 or more")
    with client_for(args) as client:
        page = client.events(args.domain, tail=args.events)
    builder = SchemaBuilder(schema_uri=DRAFT_2020_12)
    learned = 0
    for line in page.lines:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a foreign line in the file: nothing to learn from
        if isinstance(event, dict):
            builder.add_object(event)
            learned += 1
    if not learned:
        raise UsageError(f"no stored events in {args.domain!r} to learn from")
    print(json.dumps(builder.to_schema(), indent=2, sort_keys=False))
    print(f"learned from {learned} events of {args.domain}; save it as "
          f"<LEITSTAND_SCHEMA_DIR>/{args.domain}.schema.json after editing", file=sys.stderr)
    return 0
