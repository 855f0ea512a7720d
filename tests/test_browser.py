"""The web page in a real browser: Debian's Chromium (`apt-get install chromium`; .ci/run installs
it), driven by Playwright for Python, which never downloads a browser of its own here. The page
is served by uvicorn with the shipped model: pick Hafez and a ghazal, write, watch the couplets
arrive, check the right-to-left layout and the Persian font, hover a token to see the heads of
a layer, and save a screenshot (also to $PERSIAN_POETRY_SCREENSHOT when set)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import live_url

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def url():
    from persian_poetry.serve.app import create_app

    with live_url(create_app()) as base:  # the shipped model
        yield base


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_write_a_hafez_ghazal_in_the_browser(url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 900}, locale="fa-IR")
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(url) else outside.append(r.url))

    page.goto(url + "/")
    page.wait_for_function("document.querySelectorAll('#poet option').length > 10")
    assert page.evaluate("document.documentElement.dir") == "rtl"
    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    assert page.locator("#write").inner_text() == "بنویس"

    page.select_option("#poet", "hafez")
    page.select_option("#form", "ghazal")
    assert page.locator("#poet option:checked").inner_text() == "حافظ"
    assert page.locator("#form option:checked").inner_text() == "غزل"
    page.fill("#couplets", "3")
    page.click("details summary")  # the sampling settings
    page.fill("#seed", "7")
    page.click("#write")

    # Couplets appear as they are written, each hemistich with its scansion.
    page.wait_for_function("document.querySelectorAll('.couplet.done').length >= 2", timeout=120_000)
    first = page.locator(".couplet.done").first
    assert first.locator(".verse").count() == 2 and all(t.strip() for t in first.locator(".verse").all_inner_texts())
    assert first.locator(".scansion").count() == 2

    # The whole poem, then the model opened up: tokens, a layer's heads, the positional heat map.
    page.wait_for_function("document.querySelector('#summary').textContent.includes('وزن')", timeout=120_000)
    assert page.locator(".couplet").count() == 3
    page.wait_for_function("document.querySelectorAll('#heads .head-row').length > 0", timeout=60_000)
    heads = page.evaluate("fetch('/api/options').then(r => r.json()).then(o => o.model.n_head)")
    assert page.locator("#heads .head-row").count() == heads
    assert page.locator("#tokens .chip").count() > 10
    token = page.locator("#attn-tokens .chip").nth(5)
    token.hover()
    assert "query" in token.get_attribute("class")
    shaded = page.locator("#heads .head-row").first.locator(".cell").nth(5).evaluate("e => e.style.background")
    assert shaded.startswith("rgba(")
    assert page.evaluate("document.fonts.check('16px Vazirmatn')")
    assert page.locator("#pe").evaluate("c => c.width") > 0

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("PERSIAN_POETRY_SCREENSHOT"):
        shutil.copy(shot, os.environ["PERSIAN_POETRY_SCREENSHOT"])
    assert not errors, errors
    assert not outside, outside  # offline: nothing but this server
    page.close()
