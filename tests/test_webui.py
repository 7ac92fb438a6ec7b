"""The web page at `/` in a real browser: Debian's chromium driven by Playwright (no browser of Playwright's own).

Live servers on 127.0.0.1: a router over the scripted R1 models (the reply whose thought is known, and the thought
that never ends), a router over two SmolLM2 rungs for compare, and one model behind an API key. Each test is
bounded: every wait has a timeout, and the looping generation is stopped by the page's own button.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests._fixtures import scripted
from tests._fixtures.rungs import smollm2_rungs
from tests._fixtures.serve import start

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 60_000
SCREENSHOT = os.environ.get("QUANTKIT_SCREENSHOT")  # where to keep the compare view's picture (the README's)


def _sync_playwright():
    """Playwright's sync API, or a skip (only off CI) when Playwright or Debian's chromium is not installed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not CHROMIUM.exists():
        missing = "playwright" if sync_playwright is None else f"{CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests, but {missing} is not installed")
        pytest.skip(f"{missing} is not installed: the browser tests need Debian's chromium")
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    with _sync_playwright()() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def scripted_router(scripted_gguf, scripted_loop_gguf):
    # the loop guard off: the looping thought goes on until the page stops it
    with start([scripted_gguf, scripted_loop_gguf], "--ctx", "65536", "--parallel", "1", "--threads", "1",
               "--loop-guard", "off") as s:
        yield s


class Page:
    """A browser page on a server, with the console's errors and the page's exceptions kept."""

    def __init__(self, browser, base: str, settings: dict | None = None):
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.set_default_timeout(WAIT_MS)
        if settings:
            import json

            self.context.add_init_script(f"localStorage.setItem('quantkit.settings', {json.dumps(json.dumps(settings))})")
        self.page.goto(base + "/")
        self.page.wait_for_selector("body[data-ready='1']")

    def close(self) -> None:
        self.context.close()

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ask(self, prompt: str, model: str | None = None) -> None:
        """Send `prompt` from the chat box (to `model`, chosen first, when given)."""
        if model is not None:
            self.page.select_option("#model", model)
        self.page.fill("#prompt", prompt)
        self.page.click("#send")


def _model_id(server, stem_folder: str) -> str:
    ids = [m["id"] for m in httpx.get(server.base + "/v1/models").json()["data"]]
    return next(i for i in ids if i.startswith(stem_folder))


def test_chat_shows_the_thought_folded_with_its_token_count_and_the_answer(browser, scripted_router):
    model = _model_id(scripted_router, "scripted-think")
    settings = {"temperature": 0, "top_p": 1, "max_tokens": 64, "reasoning_budget": None}
    with Page(browser, scripted_router.base, settings) as p:
        page = p.page
        p.ask("What is 2 + 2?", model)
        page.wait_for_selector(".message.assistant .stats[data-finish='stop']")
        summary = page.locator(".message.assistant .thought summary")
        assert summary.get_attribute("data-tokens") == str(scripted.REASONING_TOKENS)
        assert f"{scripted.REASONING_TOKENS} tokens" in summary.inner_text()
        assert page.locator(".message.assistant details.thought").get_attribute("open") is None  # folded
        thought = page.locator(".message.assistant .thought-text").text_content()
        assert thought == scripted.THOUGHT
        answer = page.locator(".message.assistant .answer")
        assert answer.inner_text().startswith("The answer is")
        assert answer.locator("math").count() == 1  # \boxed{4} rendered as MathML
        # the model's text is not trusted: its HTML is shown as text, a javascript: link is dropped
        html = page.evaluate("Render.markdown('<img src=x onerror=alert(1)> **b** $x^2$ \\\\[y\\\\] "
                             "[l](javascript:alert(1)) `$z$`')")
        assert "<img" not in html and "&lt;img" in html and "javascript:" not in html
        assert "<strong>b</strong>" in html and html.count("<math") == 2 and "<code>$z$</code>" in html
        page.reload()  # the conversation is kept in the browser
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator(".message.user .user-text").inner_text() == "What is 2 + 2?"
        assert page.locator(".message.assistant .thought summary").get_attribute("data-tokens") == \
            str(scripted.REASONING_TOKENS)
        assert p.errors == []


def test_stop_ends_a_looping_generation_and_frees_the_slot(browser, scripted_router):
    model = _model_id(scripted_router, "scripted-loop")
    settings = {"temperature": 0, "top_p": 1, "max_tokens": 60000, "reasoning_budget": None}
    with Page(browser, scripted_router.base, settings) as p:
        page = p.page
        p.ask("Check it.", model)
        page.wait_for_function("() => Number(document.querySelector('.message.assistant .thought summary')"
                               "?.dataset.tokens || 0) > 20")
        page.click("#stop")
        page.wait_for_selector(".message.assistant .stats[data-finish='cancelled']")
        label = f'quantkit_slots_busy{{model="{model}"}}'
        deadline = time.monotonic() + 30
        while scripted_router.metrics()[label] != 0:
            assert time.monotonic() < deadline, "the server's slot is still busy after the stop"
            time.sleep(0.1)
        generated = scripted_router.metrics()[f'quantkit_generated_tokens_total{{model="{model}"}}']
        assert generated < 60000  # cancelled, not run to its end
        assert not page.locator("#send").is_hidden() and page.locator("#stop").is_hidden()
        assert p.errors == []


def test_compare_streams_two_rungs_at_once(browser, tmp_path):
    rungs = smollm2_rungs()[:2]
    with start(rungs, "--ctx", "1024", "--parallel", "1", "--threads", "1") as server:
        ids = [m["id"] for m in httpx.get(server.base + "/v1/models").json()["data"]]
        for model in ids:  # loaded first, so that both start streaming together
            assert server.post("/models/load", json={"model": model}).status_code == 200
        settings = {"temperature": 0, "top_p": 1, "max_tokens": 48, "reasoning_budget": None}
        with Page(browser, server.base, settings) as p:
            page = p.page
            page.click("#tab-compare")
            page.fill("#compare-prompt", "Tell me a story about a quantized dragon.")
            page.click("#compare-send")
            page.wait_for_function("() => document.querySelectorAll('.column .stats[data-finish]').length === 2")
            columns = page.locator(".column")
            assert [columns.nth(i).get_attribute("data-model") for i in range(2)] == ids
            times = page.eval_on_selector_all(".column .reply", "rs => rs.map(r => [+r.dataset.first, +r.dataset.end])")
            assert max(first for first, _ in times) < min(end for _, end in times)  # both streams ran at once
            for i in range(2):
                assert columns.nth(i).locator(".answer").inner_text().strip()
                assert "tokens/s" in columns.nth(i).locator(".stats").inner_text()
            picture = tmp_path / "compare.png"
            page.screenshot(path=str(picture))
            assert picture.stat().st_size > 0
            if SCREENSHOT:
                shutil.copyfile(picture, SCREENSHOT)
            assert p.errors == []


def test_a_wrong_key_shows_the_error(browser, scripted_gguf):
    with start(scripted_gguf, "--ctx", "1024", "--parallel", "1", "--threads", "1", api_key="the-right-key") as server:
        with Page(browser, server.base) as p:  # the page itself is public
            page = p.page
            page.wait_for_selector("#key-dialog[open]")
            page.fill("#key-input", "a-wrong-key")
            page.click("#key-save")
            p.ask("What is 2 + 2?")
            page.wait_for_selector("#banner:not([hidden])")
            assert "Invalid API Key" in page.inner_text("#banner")
            assert "Invalid API Key" in page.locator(".message.assistant .error").inner_text()
            page.wait_for_selector("#key-dialog[open]")  # asked again
            page.fill("#key-input", "the-right-key")
            page.click("#key-save")
            page.click("#regenerate")  # the question again, now with the right key
            page.wait_for_selector(".message.assistant .stats[data-finish='stop']")
            # the 401s are the console's only errors (the browser logs a failed request's status)
            assert all("401" in e for e in p.errors), p.errors
