"""
The browsable API from a browser's point of view, over HTTP: log in with the key on
/api-auth/key, use the session with CSRF tokens, log out; header calls stay exactly as they were.
"""

import re
from http import HTTPStatus

import httpx
import pytest

from tests.conftest import API_KEY

SESSION_COOKIE = "llmapi_session"
CSRF_COOKIE = "llmapi_csrftoken"
QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}


def csrf_token(page: httpx.Response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, "the page carries a CSRF token"
    return match.group(1)


def log_in(client: httpx.Client, key: str = API_KEY, **form) -> httpx.Response:
    page = client.get("/api-auth/key", params={"next": "/text_model/chat/completion"})
    assert page.status_code == HTTPStatus.OK
    data = {"csrfmiddlewaretoken": csrf_token(page), "key": key, **form}
    return client.post("/api-auth/key", data=data)


@pytest.fixture
def browser(gateway):
    with gateway.client(key=None) as client:
        yield client


def test_login_page_takes_the_key_and_opens_a_session(browser):
    response = log_in(browser)
    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["location"] == "/text_model/chat/completion"
    cookie = next(c for c in browser.cookies.jar if c.name == SESSION_COOKIE)
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert API_KEY not in cookie.value

    page = browser.get("/text_model/chat/completion", headers={"Accept": "text/html"})
    assert page.status_code == HTTPStatus.METHOD_NOT_ALLOWED  # GET; the page shows the form
    assert "API key #1" in page.text and "ApiClient(" not in page.text
    assert "<form" in page.text and "Log out" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_wrong_key_on_the_login_page_is_refused(browser):
    response = log_in(browser, key="wrong-key")
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert "Invalid API Key" in response.text
    assert SESSION_COOKIE not in browser.cookies


def test_login_form_needs_its_csrf_token(browser):
    browser.get("/api-auth/key")
    response = browser.post("/api-auth/key", data={"key": API_KEY})
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert SESSION_COOKIE not in browser.cookies


def test_login_never_redirects_to_another_site(browser):
    response = log_in(browser, next="https://evil.example/")
    assert response.headers["location"] == "/text_model/chat/completion"


def test_session_post_needs_a_csrf_token_and_then_answers(browser, upstream):
    log_in(browser)
    refused = browser.post("/text_model/chat/completion", json=QUESTION)
    assert refused.status_code == HTTPStatus.FORBIDDEN
    assert "CSRF" in refused.json()["detail"]

    token = browser.cookies[CSRF_COOKIE]
    answer = browser.post(
        "/text_model/chat/completion", json=QUESTION, headers={"X-CSRFToken": token}
    )
    assert answer.status_code == HTTPStatus.OK
    assert answer.json()["response"] == "The capital of France is Paris."


def test_logout_ends_the_session(browser):
    log_in(browser)
    page = browser.get("/text_model/chat/completion", headers={"Accept": "text/html"})
    response = browser.post(
        "/api-auth/logout", data={"csrfmiddlewaretoken": csrf_token(page), "next": "/docs"}
    )
    assert response.status_code == HTTPStatus.FOUND
    assert response.headers["location"] == "/docs"
    after = browser.post("/text_model/chat/completion", json=QUESTION)
    assert after.status_code == HTTPStatus.UNAUTHORIZED


def test_header_contract_is_unchanged_and_sets_no_cookie(gateway, upstream):
    with gateway.client(key=None) as client:
        missing = client.post("/text_model/chat/completion", json=QUESTION)
        wrong = client.post(
            "/text_model/chat/completion", json=QUESTION, headers={"X-API-Key": "x"}
        )
        right = client.post(
            "/text_model/chat/completion", json=QUESTION, headers={"X-API-Key": API_KEY}
        )
    assert missing.status_code == HTTPStatus.UNAUTHORIZED
    assert missing.json() == {"detail": "Missing API Key. Please provide X-API-Key header."}
    assert wrong.status_code == HTTPStatus.FORBIDDEN
    assert wrong.json() == {"detail": "Invalid API Key"}
    assert right.status_code == HTTPStatus.OK
    for response in (missing, wrong, right):
        assert "set-cookie" not in response.headers
        assert "Cookie" not in response.headers.get("vary", "")
