"""
The docs and the playground in a real headless Chromium (Debian's package, driven by
Playwright): a newcomer's first steps, with every network request checked to stay on the
server's own origin. Screenshots are saved in test-artifacts/screenshots/; with
UPDATE_SCREENSHOTS=1 they also replace the README's, in docs/screenshots/.
"""

import os
import shutil
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import API_KEY, ROOT
from tests.images import image_bytes

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
README_SCREENSHOTS = ROOT / "docs" / "screenshots"


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / name)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        page.screenshot(path=README_SCREENSHOTS / name)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.requested, page.blocked = [], []
    page.on("request", lambda request: page.requested.append(request.url))
    page.on(
        "requestfailed",
        lambda request: (
            page.blocked.append(request.url) if "csp" in (request.failure or "").lower() else None
        ),
    )
    yield page
    context.close()


def assert_same_origin(page, origin: str) -> None:
    """Nothing left the server's origin: any other request was refused by the page's CSP."""
    page.wait_for_load_state("networkidle")
    foreign = [url for url in page.requested if not url.startswith((origin, "data:", "blob:"))]
    assert page.requested
    assert [url for url in foreign if url not in page.blocked] == []


def test_docs_authorize_and_try_it_out(page, gateway, upstream):
    page.goto(f"{gateway.url}/docs")
    expect(page.locator(".info .title")).to_contain_text("llmapi")
    screenshot(page, "docs.png")
    page.locator("button.authorize").first.click()
    page.locator(".modal-ux input").first.fill(API_KEY)
    page.locator(".modal-ux button.modal-btn.auth.authorize").click()
    page.locator(".modal-ux button.btn-done").click()

    operation = page.locator(".opblock-post").filter(
        has=page.locator('[data-path="/text_model/chat/completion"]')
    )
    operation.locator(".opblock-summary").click()
    try_it = operation.get_by_role("button", name="Try it out")
    if try_it.count():
        try_it.click()
    operation.get_by_role("button", name="Execute").click()
    response = operation.locator(".live-responses-table")
    expect(response).to_contain_text("The capital of France is Paris.", timeout=15000)
    expect(response).to_contain_text("200")
    assert upstream.last_request.headers["authorization"] == "Bearer upstream-secret-token"
    response.scroll_into_view_if_needed()
    screenshot(page, "docs-try-it-out.png")
    assert_same_origin(page, gateway.url)


def test_redoc_renders_offline(page, gateway):
    page.goto(f"{gateway.url}/redoc")
    expect(page.locator("h1").first).to_contain_text("llmapi", timeout=15000)
    assert_same_origin(page, gateway.url)


def test_playground_streams_a_multi_turn_chat(page, gateway, upstream):
    words = [f"word{i} " for i in range(10)]
    upstream.behave(chunks=words, chunk_interval=0.15)
    page.goto(f"{gateway.url}/")  # the home page leads to the playground
    page.fill("#api-key", API_KEY)
    page.fill("#prompt", "Tell me a short story")
    page.click("#send")

    answer = page.locator("#messages li.assistant .text").last
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = answer.text_content() or ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if text == "".join(words):
            break
        time.sleep(0.03)
    assert seen[-1] == "".join(words)
    assert len(seen) >= 3, f"the answer should appear in steps, saw {seen}"
    expect(page.locator("#status")).to_contain_text("Done")

    # A second turn carries the first one.
    upstream.behave(content="Paris is the capital of France.")
    page.fill("#prompt", "And the capital of France?")
    page.click("#send")
    expect(page.locator("#messages li.assistant .text").last).to_have_text(
        "Paris is the capital of France.", timeout=10000
    )
    history = upstream.last_request.body["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert history[1]["content"] == "".join(words)

    page.click("#show-curl")
    expect(page.locator("#curl")).to_contain_text("/text_model/chat/stream")
    assert API_KEY not in (page.locator("#curl").text_content() or "")
    screenshot(page, "playground.png")
    assert_same_origin(page, gateway.url)


def test_playground_asks_the_image_model_about_an_uploaded_picture(
    page, gateway, upstream, tmp_path
):
    picture = tmp_path / "desk.png"
    picture.write_bytes(image_bytes("PNG", size=(40, 30)))
    upstream.behave(content="A laptop and a coffee mug on a desk.")
    page.goto(f"{gateway.url}/playground")
    page.fill("#api-key", API_KEY)
    page.check("input[name=mode][value=image]")
    page.set_input_files("#image", str(picture))
    page.fill("#prompt", "What objects are in this image?")
    page.click("#send")
    expect(page.locator("#messages li.assistant .text").last).to_have_text(
        "A laptop and a coffee mug on a desk.", timeout=10000
    )
    sent = upstream.last_request.body
    assert sent["model"] == "fake-vlm"
    assert sent["messages"][-1]["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    assert_same_origin(page, gateway.url)


def test_playground_keeps_the_key_in_session_storage_only(page, gateway):
    page.goto(f"{gateway.url}/playground")
    page.fill("#api-key", API_KEY)
    stored = page.evaluate(
        "() => [sessionStorage.getItem('llmapi-key'), localStorage.length, document.cookie]"
    )
    assert stored == [API_KEY, 0, ""]


def test_playground_shows_errors_plainly(page, gateway):
    page.goto(f"{gateway.url}/playground")
    page.fill("#api-key", "wrong-key")
    page.fill("#prompt", "Hello")
    page.click("#send")
    expect(page.locator("#messages li.error")).to_contain_text("403: Invalid API Key")
