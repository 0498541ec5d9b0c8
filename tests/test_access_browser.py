"""The web view in headless Chromium (Debian's, driven by Playwright; see test_browser.py) with a
read-only named token: it says whose view it is and shows only the domains, tail and rejections
that token may read; a producer's token cannot sign in."""

from __future__ import annotations

import hashlib

import httpx
from playwright.sync_api import Browser, expect

from testing import ServerProcess

from .test_browser import WAIT_MS, browser  # noqa: F401 - the fixture

READER, WRITER, FULL = "reader-secret-1", "writer-secret-2", "full-secret-3"


def entry(name: str, secret: str, write: str, read: str) -> str:
    return (f'[[token]]\nname = "{name}"\nsha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"'
            f"\nwrite = {write}\nread = {read}\n\n")


def ingest(server: ServerProcess, domain: str, event: dict, secret: str) -> int:
    return httpx.post(f"{server.url}/v1/ingest", params={"domain": domain}, json=event,
                      headers={"X-Auth": secret}, timeout=10).status_code


def test_a_read_only_token_sees_only_its_domains(browser: Browser,  # noqa: F811
                                                 start_server, tmp_path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(entry("wohnzimmer", READER, "[]", '["aussen", "garten.*"]')
                    + entry("sensor", WRITER, '["garten.*"]', "[]")
                    + entry("admin", FULL, '["*"]', '["*"]'))
    server = start_server(token=None, env={"LEITSTAND_TOKENS_FILE": str(path)})
    for domain in ("aussen", "keller", "garten.beet", "haustuer"):
        assert ingest(server, domain, {"event": "hello", "where": domain}, FULL) == 202
    assert ingest(server, "keller", {"event": "x"}, WRITER) == 403  # a rejection of keller
    assert ingest(server, "garten.teich", {"event": "x"}, "wrong") == 401  # and one of garten
    assert ingest(server, "aussen", {"event": "x"}, WRITER) == 403  # and one of aussen

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")

    # A producer's token reads nothing: it cannot sign in, and says why.
    page.fill("#token", WRITER)
    page.click("#connect")
    expect(page.locator("#login-error")).to_contain_text("may not read any domain",
                                                         timeout=WAIT_MS)

    page.fill("#token", READER)
    page.click("#connect")
    expect(page.locator("#dashboard")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#who")).to_have_text("wohnzimmer · reads aussen, garten.*",
                                              timeout=WAIT_MS)
    expect(page.locator("#scope-note")).to_contain_text("may read: aussen, garten.*")
    rows = page.locator("#domains tbody tr")
    expect(rows).to_have_count(2, timeout=WAIT_MS)
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.domain)")) == [
        "aussen", "garten.beet"]
    options = page.locator("#tail-domain option")
    assert sorted(options.evaluate_all("os => os.map(o => o.value)")) == ["aussen", "garten.beet"]
    # The tail follows the first readable domain; other domains' events never show.
    expect(page.locator("#tail .entry pre").first).to_contain_text('"where": "aussen"',
                                                                   timeout=WAIT_MS)
    rejected = page.locator("#rejections tbody tr")
    expect(rejected).to_have_count(2, timeout=WAIT_MS)  # not keller's, not the sign-in's
    expect(rejected.first).to_contain_text("token 'sensor' may not write domain 'aussen'")
    expect(rejected.first.locator("td").nth(3)).to_have_text("sensor")  # the Token column
    expect(rejected.nth(1)).to_contain_text("garten.teich")
    expect(rejected.nth(1)).to_contain_text("invalid X-Auth token")
    body = page.locator("body").inner_text()
    assert "keller" not in body and "haustuer" not in body
    assert errors == []
