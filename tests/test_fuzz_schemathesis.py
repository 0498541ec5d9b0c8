"""Schemathesis against docs/openapi.yaml and the live server (`uvicorn app:app`), with and
without auth: no 5xx, and every answer's status, content type, headers and body conform to the
document.

The default run is short (LEITSTAND_FUZZ_EXAMPLES=20 examples per operation and phase, a fixed
seed so CI is reproducible). Longer runs, e.g. before a release:

    LEITSTAND_FUZZ_EXAMPLES=1000 LEITSTAND_FUZZ_SEED=random .venv/bin/python -m pytest \
        tests/test_fuzz_schemathesis.py

The schemathesis CLI (`st run`) runs in a subprocess: its examples, coverage (boundary values,
missing or malformed headers, wrong methods) and fuzzing phases.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing import ROOT, ServerProcess

from .conftest import TOKEN

LONG_RUN = "LEITSTAND_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("LEITSTAND_FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("LEITSTAND_FUZZ_SEED", "20261126")
# Each check is a promise of the document; `positive_data_acceptance` is left out because the
# document cannot say that a domain must come from the query or the events (a valid-looking
# body without either is rightly a 400).
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "ignored_auth",
])
SCHEMA = ROOT / "docs" / "openapi.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data", token=TOKEN)
    try:
        yield proc.start()
    finally:
        proc.stop()


def run_schemathesis(url: str, headers: list[str], workdir: Path, extra: tuple[str, ...] = (),
                     examples: int = EXAMPLES) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run", str(SCHEMA), "--url", url,
        "--checks", CHECKS, "--max-examples", str(examples), "--workers", "1",
        "--request-timeout", "20", "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(workdir / "report"),
    ]
    if SEED != "random":
        cmd += ["--seed", SEED]
    for header in headers:
        cmd += ["--header", header]
    cmd += extra
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "PYTHONPATH": str(ROOT),
           "NO_COLOR": "1"}
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=max(300, EXAMPLES * 10), check=False)


def assert_clean_run(result: subprocess.CompletedProcess, live: ServerProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert re.search(r"\d+ generated, \d+ passed", output), output[-8000:]
    summary = [line for line in output.splitlines() if line.startswith("=====")][-1]
    assert "failure" not in summary and "error" not in summary, output[-8000:]
    assert live.proc is not None and live.proc.poll() is None, live.log()
    assert "Traceback" not in live.log(), live.log()
    return output


def test_fuzz_with_auth(live: ServerProcess, tmp_path: Path) -> None:
    # /v1/stream (server-sent events) answers an accepted request with a stream that stays
    # open: every such case would wait for the request timeout. It is fuzzed without auth below.
    result = run_schemathesis(live.url, [f"X-Auth: {TOKEN}"], tmp_path,
                              ("--exclude-path", "/v1/stream"))
    output = assert_clean_run(result, live)
    # the run really reached the store: the documented examples were accepted and written
    assert "Examples" in output
    stored = list(live.data_dir.glob("*.jsonl"))
    assert stored, output[-4000:]


def test_fuzz_without_auth(live: ServerProcess, tmp_path: Path) -> None:
    before = {p: p.stat().st_size for p in live.data_dir.glob("*.jsonl")}
    # every answer is a 401 here: fewer examples find as much (all of them in long runs)
    result = run_schemathesis(live.url, [], tmp_path,
                              examples=EXAMPLES if LONG_RUN else max(5, EXAMPLES // 4))
    assert_clean_run(result, live)
    after = {p: p.stat().st_size for p in live.data_dir.glob("*.jsonl")}
    assert after == before  # without the token nothing was written


@pytest.mark.skipif(not LONG_RUN, reason="long fuzz runs only (LEITSTAND_FUZZ_EXAMPLES)")
def test_fuzz_with_a_wrong_token(live: ServerProcess, tmp_path: Path) -> None:
    before = {p: p.stat().st_size for p in live.data_dir.glob("*.jsonl")}
    result = run_schemathesis(live.url, ["X-Auth: not-the-token"], tmp_path)
    assert_clean_run(result, live)
    assert {p: p.stat().st_size for p in live.data_dir.glob("*.jsonl")} == before
