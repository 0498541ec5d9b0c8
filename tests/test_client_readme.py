"""Both client snippets of the README run exactly as printed there (extracted from README.md,
so the test fails when the README drifts): the Mini-Test against a real server process on
localhost:8788 (or LEITSTAND_URL when that port is taken) and the hermetic one in-process. The
client settings tables (README and docs/configuration.md) match the client's defaults."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson

from testing import ROOT, ServerProcess

# The snippets as the spec prints them; the README must keep them unchanged.
SPEC_MINI_TEST = (
    "python -c 'import os; os.environ[\"LEITSTAND_TOKEN\"]=\"dev\"; from tools.hauski_ingest "
    "import ingest_event; print(ingest_event(\"example.com\", "
    "{\"event\":\"test\",\"status\":\"ok\"}))'\n"
)
SPEC_HERMETIC = """\
import os
os.environ["LEITSTAND_TOKEN"] = "dev"
import httpx
from app import app  # die FastAPI-App
from tools.hauski_ingest import ingest_event
transport = httpx.ASGITransport(app=app)
print(ingest_event("example.com", {"event":"test","status":"ok"}, url="http://test", transport=transport))
"""  # noqa: E501 - verbatim


def readme_snippet(heading: str, language: str) -> str:
    """The first ```language block under `heading` (before the next heading) in README.md."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines(keepends=True)
    assert f"{heading}\n" in lines, f"README.md has no heading {heading!r}"
    position = lines.index(f"{heading}\n") + 1
    while not lines[position].startswith(f"```{language}"):
        assert not lines[position].startswith("#"), f"no ```{language} block under {heading!r}"
        position += 1
    end = lines.index("```\n", position + 1)
    return "".join(lines[position + 1:end])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LEITSTAND_") and k != "LOG_LEVEL"}
    # `python` in the snippet is this interpreter (the project's venv)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def events_in(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_readme_keeps_the_spec_snippets() -> None:
    assert readme_snippet("### Mini-Test", "bash") == SPEC_MINI_TEST
    assert readme_snippet("### Testen ohne echte Netzwerk-Sockets", "python") == SPEC_HERMETIC


def test_mini_test_snippet_against_a_real_server(tmp_path: Path) -> None:
    snippet = readme_snippet("### Mini-Test", "bash")
    port = 8788 if port_is_free(8788) else None
    server = ServerProcess(tmp_path / "data", token="dev", port=port)
    env = clean_env()
    if port != 8788:  # the default URL's port is taken by something else on this machine
        env["LEITSTAND_URL"] = server.url
    try:
        server.start()
        result = subprocess.run(["bash", "-c", snippet], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert events_in(tmp_path / "data" / "example.com.jsonl") == [
        {"event": "test", "status": "ok", "domain": "example.com"}]


def test_hermetic_snippet_with_asgi_transport(tmp_path: Path) -> None:
    snippet = readme_snippet("### Testen ohne echte Netzwerk-Sockets", "python")
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-c", snippet], cwd=ROOT,
        env=clean_env(LEITSTAND_DATA_DIR=str(data_dir)),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert events_in(data_dir / "example.com.jsonl") == [
        {"event": "test", "status": "ok", "domain": "example.com"}]


def client_defaults() -> dict[str, str]:
    from leitstand.client import ClientConfig

    defaults = ClientConfig.resolve(env={"LEITSTAND_TOKEN": "t"})
    return {
        "LEITSTAND_URL": defaults.url, "LEITSTAND_TIMEOUT": f"{defaults.timeout:g}",
        "LEITSTAND_RETRIES": str(defaults.retries), "LEITSTAND_BACKOFF": f"{defaults.backoff:g}",
        "LEITSTAND_MAX_BODY": str(defaults.max_body),
        "LEITSTAND_MAX_EVENTS": str(defaults.max_events),
        "LEITSTAND_MAX_BACKOFF": f"{defaults.max_backoff:g}",
        "LEITSTAND_MAX_RETRY_AFTER": f"{defaults.max_retry_after:g}",
    }


def assert_client_table(section: str) -> None:
    for name, value in client_defaults().items():
        assert f"| `{name}`" in section and f"`{value}`" in section.split(f"| `{name}`")[1].split(
            "\n")[0], name
    assert "| `LEITSTAND_TOKEN`" in section


def test_readme_env_table_matches_the_client_defaults() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert_client_table(text[text.index("## Client-Library"):text.index("### Mini-Test")])


def test_configuration_reference_lists_the_client_settings_with_their_defaults() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert_client_table(text.split("## Client settings\n", 1)[1].split("\n## ", 1)[0])


def test_every_client_setting_is_in_the_configuration_reference() -> None:
    from dataclasses import fields

    from leitstand.client import ClientConfig

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = text.split("## Client settings\n", 1)[1].split("\n## ", 1)[0]
    for field in fields(ClientConfig):
        assert f"| `LEITSTAND_{field.name.upper()}`" in table, field.name
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("LEITSTAND_SPOOL_DIR", "LEITSTAND_SPOOL_MAX_BYTES", "LEITSTAND_CA_FILE"):
        assert name in readme, name
