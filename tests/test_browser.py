"""The control-room web view in a real headless Chromium (Debian's), against the real server.

Needs /usr/bin/chromium (installed by scripts/test-deps.sh, which `make test` runs). Playwright
only drives it; no browser is ever downloaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from testing import ROOT, ServerProcess

from .conftest import TOKEN

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 30_000  # every wait for the page is bounded by this (polls run every 3 s and 9 s)


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing: run `bash scripts/test-deps.sh`"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live_server(server: ServerProcess) -> ServerProcess:
    """conftest's real server (`uvicorn app:app`, stopped by its PID)."""
    return server


def ingest(server: ServerProcess, domain: str, event: dict, token: str = TOKEN) -> int:
    response = httpx.post(f"{server.url}/v1/ingest", params={"domain": domain}, json=event,
                          headers={"X-Auth": token}, timeout=10)
    return response.status_code


def login(page: Page, server: ServerProcess) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#login")).to_be_visible(timeout=WAIT_MS)
    page.fill("#token", TOKEN)
    page.click("#connect")
    expect(page.locator("#dashboard")).to_be_visible(timeout=WAIT_MS)


def test_control_room_shows_domains_tail_and_rejections(
    browser: Browser, live_server: ServerProcess
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(live_server.url) or
            r.url.startswith("data:") else outside.append(r.url))

    # A wrong token is refused at the door; the right one opens the dashboard.
    page.goto(live_server.url + "/")
    page.fill("#token", "wrong-token")
    page.click("#connect")
    expect(page.locator("#login-error")).to_contain_text("not accepted", timeout=WAIT_MS)
    errors.clear()  # the browser logs the refused request itself
    login(page, live_server)
    expect(page.locator("#domains-empty")).to_be_visible(timeout=WAIT_MS)

    # A new domain appears after an ingest, and its live tail starts.
    assert ingest(live_server, "aussen", {"event": "first", "temp": 21.5}) == 202
    row = page.locator('#domains tbody tr[data-domain="aussen"]')
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(row).to_contain_text("1")
    tail = page.locator("#tail .entry pre")
    expect(tail.filter(has_text='"event": "first"')).to_have_count(1, timeout=WAIT_MS)

    # The tail updates live, pretty-printed.
    assert ingest(live_server, "aussen", {"event": "second", "nested": {"ok": True}}) == 202
    second = tail.filter(has_text='"event": "second"')
    expect(second).to_have_count(1, timeout=WAIT_MS)
    assert '\n  "nested": {\n    "ok": true\n  }' in second.inner_text()

    # Filter and pause.
    page.fill("#filter", "second")
    expect(page.locator("#tail .entry:not(.hidden)")).to_have_count(1, timeout=WAIT_MS)
    page.fill("#filter", "")
    page.click("#pause")
    assert ingest(live_server, "aussen", {"event": "third"}) == 202
    expect(page.locator("#pause")).to_contain_text("1 new", timeout=WAIT_MS)
    expect(tail.filter(has_text="third")).to_have_count(0)
    page.click("#pause")
    expect(tail.filter(has_text="third")).to_have_count(1, timeout=WAIT_MS)

    # A request with a bad token shows up among the rejections, with its reason.
    assert ingest(live_server, "garten", {"event": "x"}, token="not-the-token") == 401
    rejected = page.locator("#rejections tbody tr").filter(has_text="/v1/ingest")
    expect(rejected.first).to_contain_text("invalid X-Auth token", timeout=WAIT_MS)
    expect(rejected.first).to_contain_text("401")
    expect(rejected.first).to_contain_text("garten")

    # A second domain: the chart and the table carry both; let a few samples accumulate.
    for i in range(5):
        assert ingest(live_server, "innen", {"event": "tick", "i": i}) == 202
    expect(page.locator('#domains tbody tr[data-domain="innen"]')).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#legend li")).to_have_count(2, timeout=WAIT_MS)
    expect(page.locator("#legend li").filter(has_text="innen")).to_contain_text("/s")
    # The chart is drawn (once a domain has two samples): a line in each domain's colour.
    page.wait_for_function("""() => {
        const c = document.getElementById('chart');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const colours = new Set();
        for (let i = 0; i < d.length; i += 4) {
            if (d[i + 3]) colours.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]);
        }
        return colours.has(0x4fb3ff) && colours.has(0x3ecf8e);
    }""", timeout=WAIT_MS)
    assert page.evaluate("sessionStorage.getItem('leitstand.token')") == TOKEN

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "control-room.png"), full_page=True)

    # The token survives a reload of the tab (sessionStorage): no second login.
    page.reload()
    expect(page.locator("#dashboard")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#login")).to_be_hidden()
    assert errors == []
    assert outside == []


def test_control_room_shows_disk_use_segments_and_a_low_space_warning(
    browser: Browser, start_server, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    """With rotation on, each domain shows its bytes on disk and its segments; with less than
    twice LEITSTAND_MIN_FREE_BYTES free the page warns before writes are refused."""
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    server = start_server(env={"LEITSTAND_ROTATE_BYTES": "1KiB", "LEITSTAND_COMPRESS": "zstd",
                               "LEITSTAND_MIN_FREE_BYTES": str(int(free * 0.6))})
    for n in range(40):
        assert ingest(server, "garten", {"n": n, "pad": "x" * 60}) == 202
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    login(page, server)
    row = page.locator('#domains tbody tr[data-domain="garten"]')
    expect(row).to_be_visible(timeout=WAIT_MS)
    segments = row.locator("td").nth(7)
    expect(segments).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS)
    expect(row.locator("td").nth(6)).to_have_text(re.compile(r"^[1-9][\d.]* (B|KiB)$"))
    warning = page.locator("#space-warning")
    expect(warning).to_be_visible(timeout=WAIT_MS)
    expect(warning).to_contain_text("running low")
    expect(warning).to_contain_text("LEITSTAND_MIN_FREE_BYTES")
