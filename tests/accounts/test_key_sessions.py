import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.middleware import SessionMiddleware
from django.utils.crypto import get_random_string
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from accounts.key_sessions import (
    INVALID_KEY_DETAIL,
    MISSING_KEY_DETAIL,
    SESSION_KEY_DIGEST,
    ApiKeyAuthentication,
    key_is_valid,
    log_in_session,
)
from accounts.principals import bootstrap_principal

factory = APIRequestFactory()
# Browser sessions live in the database (or Redis): the tests below open some.
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def keys(settings):
    settings.API_KEYS = ["first-key", "second-key"]


def authenticate(**headers):
    request = factory.post("/", headers=headers)
    return ApiKeyAuthentication().authenticate(request)


def test_missing_key_raises_not_authenticated_with_hint():
    with pytest.raises(exceptions.NotAuthenticated) as caught:
        authenticate()
    assert caught.value.detail == MISSING_KEY_DETAIL


def test_wrong_key_raises_permission_denied():
    with pytest.raises(exceptions.PermissionDenied) as caught:
        authenticate(**{"X-API-Key": "nope"})
    assert caught.value.detail == INVALID_KEY_DETAIL


@pytest.mark.parametrize(("key", "index"), [("first-key", 0), ("second-key", 1)])
def test_every_rotated_key_is_accepted(key, index):
    client, _ = authenticate(**{"X-API-Key": key})
    assert client.is_authenticated and client.quota.key_id == f"env{index}"


def test_prefix_of_a_key_is_not_accepted():
    assert key_is_valid("first", ["first-key"]) is None


def test_no_configured_keys_accepts_nothing():
    assert key_is_valid("", []) is None


def test_authenticate_header_names_the_header():
    assert "X-API-Key" in ApiKeyAuthentication().authenticate_header(None)


def test_client_is_shown_by_key_position_never_by_key():
    assert str(bootstrap_principal(1)) == "API key #2"


# --- The browser session (browsable API) ---------------------------------------------------

csrf_factory = APIRequestFactory(enforce_csrf_checks=True)


def session_cookie(key: str) -> str:
    """The session cookie (the session's id) a browser gets after logging in with `key`."""
    request = csrf_factory.post("/api-auth/key")
    SessionMiddleware(lambda request: None).process_request(request)
    assert log_in_session(request, key) is not None
    request.session.save()
    return request.session.session_key


def browser_request(method: str, *, session: str | None, csrf: bool = False, **headers):
    cookies = {} if session is None else {settings.SESSION_COOKIE_NAME: session}
    token = get_random_string(32)  # an unmasked CSRF secret is a valid token too
    if csrf:
        cookies[settings.CSRF_COOKIE_NAME] = token
        headers["X-CSRFToken"] = token
    request = getattr(csrf_factory, method)("/text_model/chat/completion", headers=headers)
    request.COOKIES.update(cookies)
    SessionMiddleware(lambda request: None).process_request(request)
    return Request(request)


def test_session_from_the_login_page_authenticates_a_safe_request():
    client, _ = ApiKeyAuthentication().authenticate(
        browser_request("get", session=session_cookie("second-key"))
    )
    assert client.quota.key_id == "env1"


def test_session_post_without_csrf_token_is_refused():
    request = browser_request("post", session=session_cookie("first-key"))
    with pytest.raises(exceptions.PermissionDenied) as caught:
        ApiKeyAuthentication().authenticate(request)
    assert "CSRF" in str(caught.value.detail)


def test_session_post_with_csrf_token_is_accepted():
    request = browser_request("post", session=session_cookie("first-key"), csrf=True)
    client, _ = ApiKeyAuthentication().authenticate(request)
    assert client.quota.key_id == "env0"


def test_header_post_needs_no_csrf_token():
    client, _ = ApiKeyAuthentication().authenticate(
        browser_request("post", session=None, **{"X-API-Key": "first-key"})
    )
    assert client.quota.key_id == "env0"


def test_header_is_judged_alone_even_beside_a_valid_session():
    request = browser_request("get", session=session_cookie("first-key"), **{"X-API-Key": "nope"})
    with pytest.raises(exceptions.PermissionDenied) as caught:
        ApiKeyAuthentication().authenticate(request)
    assert caught.value.detail == INVALID_KEY_DETAIL


def test_session_of_a_key_removed_from_api_key_no_longer_works(settings):
    cookie = session_cookie("first-key")
    settings.API_KEYS = ["second-key"]
    with pytest.raises(exceptions.NotAuthenticated) as caught:
        ApiKeyAuthentication().authenticate(browser_request("get", session=cookie))
    assert caught.value.detail == MISSING_KEY_DETAIL


def test_a_guessed_session_id_is_ignored():
    cookie = session_cookie("first-key")
    forged = cookie[:-2] + ("aa" if not cookie.endswith("aa") else "bb")
    with pytest.raises(exceptions.NotAuthenticated):
        ApiKeyAuthentication().authenticate(browser_request("get", session=forged))


def test_wrong_key_opens_no_session():
    request = csrf_factory.post("/api-auth/key")
    SessionMiddleware(lambda request: None).process_request(request)
    assert log_in_session(request, "first") is None
    assert request.session.is_empty()


def test_session_holds_a_digest_never_the_key():
    stored = SessionStore(session_cookie("first-key"))
    assert stored[SESSION_KEY_DIGEST] and "first-key" not in stored.values()


# --- Database keys in the browser session --------------------------------------------------


@pytest.mark.django_db
def test_session_opened_with_a_database_key_stops_when_it_is_revoked(make_key):
    from accounts import selectors, services

    created = make_key(name="browser")
    cookie = session_cookie(created.full_key)
    client, _ = ApiKeyAuthentication().authenticate(browser_request("get", session=cookie))
    assert (client.kind, client.name) == ("key", "browser")
    assert created.full_key not in SessionStore(cookie).values()
    services.revoke_api_key(prefix=created.api_key.prefix)
    selectors.forget_all()
    with pytest.raises(exceptions.NotAuthenticated):
        ApiKeyAuthentication().authenticate(browser_request("get", session=cookie))


@pytest.mark.django_db
def test_a_header_cannot_reach_a_sessions_cache_entry(make_key):
    from accounts import selectors

    created = make_key(name="browser")
    cookie = session_cookie(created.full_key)
    ApiKeyAuthentication().authenticate(browser_request("get", session=cookie))  # cached now
    forged = selectors.session_candidate(created.api_key.prefix)
    with pytest.raises(exceptions.PermissionDenied) as caught:
        ApiKeyAuthentication().authenticate(
            browser_request("get", session=None, **{"X-API-Key": forged})
        )
    assert caught.value.detail == INVALID_KEY_DETAIL
