"""The web view with schemas, in real headless Chromium against the real server: each domain
shows whether a schema applies, and a schema rejection shows its errors readably."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, expect

from testing import ServerProcess

from .test_browser import WAIT_MS, browser, ingest, login  # noqa: F401 - `browser`: a fixture


def test_domains_show_their_schema_and_rejections_their_errors(
    browser: Browser, start: Callable[..., ServerProcess], tmp_path: Path,  # noqa: F811
) -> None:
    schema_dir = tmp_path / "schemas"
    schema_dir.mkdir()
    (schema_dir / "aussen.schema.json").write_text(json.dumps({
        "type": "object", "properties": {"temperature": {"type": "number"}},
        "required": ["temperature"]}))
    server = start(env={"LEITSTAND_SCHEMA_DIR": str(schema_dir)})
    assert ingest(server, "aussen", {"temperature": 20}) == 202
    assert ingest(server, "innen", {"temperature": "warm"}) == 202
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, server)

    aussen = page.locator('#domains tbody tr[data-domain="aussen"] td.schema')
    expect(aussen).to_have_text("aussen.schema.json", timeout=WAIT_MS)
    innen = page.locator('#domains tbody tr[data-domain="innen"] td.schema')
    expect(innen).to_have_text("none", timeout=WAIT_MS)

    assert ingest(server, "aussen", {"temperature": "warm"}) == 422
    rejected = page.locator("#rejections tbody tr").filter(has_text="aussen")
    listed = rejected.first.locator(".schema-errors li")
    expect(listed).to_have_count(1, timeout=WAIT_MS)
    expect(listed).to_have_text("event 0 /temperature 'warm' is not of type 'number'")
    expect(rejected.first).to_contain_text("422")
    assert errors == []
