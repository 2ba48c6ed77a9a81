"""
The docs and the playground in a real headless Chromium (Debian's package, driven by
Playwright): a newcomer's first steps, with every network request checked to stay on the
server's own origin. Screenshots are saved in test-artifacts/screenshots/; with
UPDATE_SCREENSHOTS=1 they also replace the README's, in docs/screenshots/.
"""

import json
import os
import re
import shutil

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
    page.console_errors = []
    page.on(
        "console",
        lambda message: (
            page.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
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
    curl = operation.locator(".curl-command").text_content() or ""
    assert f"{gateway.url}/text_model/chat/completion" in curl
    assert f"X-API-Key: {API_KEY}" in curl
    assert "csrf" not in curl.lower()
    response.scroll_into_view_if_needed()
    screenshot(page, "docs-try-it-out.png")
    assert_same_origin(page, gateway.url)
    assert page.console_errors == []


def test_docs_guide_shows_the_servers_own_address(page, gateway):
    page.goto(f"{gateway.url}/docs")
    guide = page.locator(".info .description")
    expect(guide).to_contain_text(f"curl -X POST {gateway.url}/text_model/chat/completion")
    openai_tag = page.locator("#operations-tag-OpenAI-compatible").locator("..")
    expect(openai_tag).to_contain_text(f"{gateway.url}/v1")
    assert ":1999" not in (page.locator("#swagger-ui").text_content() or "")
    assert page.console_errors == []


def test_redoc_renders_offline_without_console_errors(page, gateway):
    page.goto(f"{gateway.url}/redoc")
    expect(page.locator("h1").first).to_contain_text("llmapi", timeout=15000)
    logo = page.locator('img[alt="redocly logo"]')
    expect(logo).to_be_visible()
    assert logo.evaluate("img => img.complete && img.naturalWidth > 0")
    assert_same_origin(page, gateway.url)
    assert page.blocked == []
    assert page.console_errors == []


def test_browsable_api_logs_in_with_the_key_and_posts_the_form(page, gateway, upstream):
    page.goto(f"{gateway.url}/text_model/chat/completion")
    expect(page.locator(".response-info")).to_contain_text("401")
    expect(page.locator(".navbar-brand")).to_have_text("llmapi")
    page.locator(".navbar").get_by_role("link", name="Log in with API key").click()
    page.fill("#api-key", API_KEY)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{gateway.url}/text_model/chat/completion")
    expect(page.locator(".navbar")).to_contain_text("API key #1")

    form = page.locator("#post-generic-content-form")
    example = json.loads(form.locator("textarea").input_value())  # the form starts filled in
    assert example["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    example["messages"][0]["content"] = "And the capital of Italy?"
    form.locator("textarea").fill(json.dumps(example))
    form.get_by_role("button", name="POST").click()
    expect(page.locator(".response-info")).to_contain_text(
        "The capital of France is Paris.", timeout=15000
    )
    expect(page.locator(".response-info")).to_contain_text("200 OK")
    assert upstream.last_request.body["messages"][-1]["content"] == "And the capital of Italy?"
    screenshot(page, "browsable-api.png")
    assert_same_origin(page, gateway.url)

    page.locator(".navbar .dropdown-toggle").click()
    page.locator(".navbar").get_by_text("Log out").click()
    expect(page.locator(".navbar").get_by_role("link", name="Log in")).to_be_visible()


def test_playground_streams_a_multi_turn_chat(page, gateway, upstream):
    words = [f"word{i} " for i in range(10)]
    upstream.behave(chunks=words, chunk_interval=0.15)
    page.goto(f"{gateway.url}/")  # the home page leads to the playground
    page.fill("#api-key", API_KEY)
    page.fill("#prompt", "Tell me a short story")
    # Every state the answer goes through, recorded by the page as it changes.
    page.evaluate(
        """() => {
            window.seenAnswers = [];
            new MutationObserver(() => {
                const answers = document.querySelectorAll("#messages li.assistant .text");
                const text = answers.length ? answers[answers.length - 1].textContent : "";
                const seen = window.seenAnswers;
                if (text && seen[seen.length - 1] !== text) seen.push(text);
            }).observe(document.querySelector("#messages"),
                       {childList: true, subtree: true, characterData: true});
        }"""
    )
    page.click("#send")

    page.wait_for_function(
        "(whole) => window.seenAnswers[window.seenAnswers.length - 1] === whole",
        arg="".join(words),
        timeout=60_000,
    )
    seen = page.evaluate("() => window.seenAnswers")
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
    expect(page.locator("#curl")).to_contain_text(f"{gateway.url}/text_model/chat/stream")
    assert API_KEY not in (page.locator("#curl").text_content() or "")
    screenshot(page, "playground.png")
    assert_same_origin(page, gateway.url)


def test_playground_curl_panel_gets_the_full_width(page, gateway):
    page.goto(f"{gateway.url}/playground")
    page.fill("#prompt", "What is the capital of France?")
    page.click("#show-curl")
    panel = page.locator("#curl")
    expect(panel).to_contain_text('-H "X-API-Key: $API_KEY"')
    settings_box = page.locator(".settings").bounding_box()
    chat_box = page.locator(".chat").bounding_box()
    curl_box = panel.bounding_box()
    assert settings_box and chat_box and curl_box
    # Below both columns and as wide as both, not squeezed into the settings column.
    assert curl_box["y"] >= chat_box["y"] + chat_box["height"]
    assert curl_box["width"] >= settings_box["width"] + chat_box["width"]
    # Each line of the command fits: the lines are the command's own, none is wrapped.
    line_height = float(panel.evaluate("pre => parseFloat(getComputedStyle(pre).lineHeight)"))
    lines = (panel.text_content() or "").count("\n") + 1
    padding = float(panel.evaluate("pre => parseFloat(getComputedStyle(pre).paddingTop) * 2"))
    assert curl_box["height"] <= lines * line_height + padding + 4
    panel.scroll_into_view_if_needed()
    screenshot(page, "playground-curl.png")


def sent_seeds(upstream) -> list:
    return [request.body.get("seed") for request in upstream.requests]


def test_playground_ask_again_varies_the_seed_unless_one_is_fixed(page, gateway, upstream):
    page.goto(f"{gateway.url}/playground")
    page.fill("#api-key", API_KEY)
    page.fill("#prompt", "Tell me a short story")
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("Done", timeout=10000)
    page.click("#ask-again")
    expect(page.locator("#status")).to_contain_text("Done", timeout=10000)
    first, second = sent_seeds(upstream)
    assert isinstance(first, int) and isinstance(second, int) and first != second
    expect(page.locator("#status")).to_contain_text(f"seed {second}")
    # The new answer replaced the old one, and the conversation holds the question once.
    expect(page.locator("#messages li.assistant")).to_have_count(1)
    expect(page.locator("#messages li.assistant .seed")).to_have_text(f"seed {second}")
    assert [m["role"] for m in upstream.last_request.body["messages"]] == ["user"]

    page.fill("#seed", "42")
    page.click("#ask-again")
    expect(page.locator("#status")).to_contain_text("seed 42", timeout=10000)
    page.click("#ask-again")
    expect(page.locator("#status")).to_contain_text("seed 42", timeout=10000)
    assert sent_seeds(upstream)[2:] == [42, 42]

    page.fill("#seed", "")
    page.fill("#temperature", "0")
    page.click("#ask-again")
    expect(page.locator("#status")).to_contain_text("Done", timeout=10000)
    assert upstream.last_request.body.get("seed", 0) == 0  # the server's default seed
    assert not re.search(r"seed \d", page.locator("#status").text_content() or "")


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
