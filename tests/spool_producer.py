"""A producer process for the spool tests: `python -m tests.spool_producer send FIRST COUNT`
sends events {"n": FIRST..FIRST+COUNT-1, "p": PRODUCER} with `send_many` (batches of
LEITSTAND_MAX_EVENTS) and prints the summary as JSON; `... drain` only waits (up to its
deadline) until the client's background drain has emptied the spool. Settings come from the
environment (LEITSTAND_URL, LEITSTAND_TOKEN, LEITSTAND_SPOOL_DIR, ...)."""

from __future__ import annotations

import json
import sys
import time

from leitstand.client import Client, Spool

DRAIN_DEADLINE = 300.0


def main(argv: list[str]) -> int:
    with Client() as client:
        if argv[0] == "send":
            first, count, producer = int(argv[1]), int(argv[2]), argv[3]
            summary = client.send_many("spool", ({"n": n, "p": producer}
                                                 for n in range(first, first + count)))
            print(json.dumps(vars(summary)))
            return 0
        spool = Spool(client.config.spool_dir, client.config.spool_max_bytes)
        deadline = time.monotonic() + DRAIN_DEADLINE
        while spool.pending():
            if time.monotonic() > deadline:
                print("the spool was not drained in time", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(json.dumps({"drained": True}))
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
