import asyncio

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.http import HttpResponse
from django.middleware.csrf import get_token
from django.test import RequestFactory

from accounts.browser_session import BrowserSessionMiddleware

factory = RequestFactory()


@pytest.fixture(autouse=True)
def close_the_sync_threads_connections():
    """
    The middleware saves sessions from Django's sync thread; its connections are closed after
    each test, or PostgreSQL refuses to drop the test database.
    """
    yield
    from asgiref.sync import sync_to_async

    from infra.database import close_connections

    asyncio.run(sync_to_async(close_connections)())


def serve(view, *, cookie: str = ""):
    async def get_response(request):
        return view(request)

    request = factory.get("/")
    if cookie:
        request.META["HTTP_COOKIE"] = cookie
    else:
        del request.META["HTTP_COOKIE"]
    return request, asyncio.run(BrowserSessionMiddleware(get_response)(request))


def test_api_call_without_cookies_gets_none_and_no_vary():
    _, response = serve(lambda request: HttpResponse("{}"))
    assert not response.cookies
    assert "Vary" not in response


def test_page_with_a_csrf_token_sets_the_cookie_on_a_first_visit():
    _, response = serve(lambda request: HttpResponse(get_token(request)))
    assert settings.CSRF_COOKIE_NAME in response.cookies


def test_csrf_cookie_sent_back_is_the_secret_the_page_uses():
    _, first = serve(lambda request: HttpResponse(get_token(request)))
    secret = first.cookies[settings.CSRF_COOKIE_NAME].value
    request, second = serve(
        lambda request: HttpResponse(get_token(request)),
        cookie=f"{settings.CSRF_COOKIE_NAME}={secret}",
    )
    assert request.META["CSRF_COOKIE"] == secret
    # Django sets it again (a fresh expiry), with the same secret.
    assert second.cookies[settings.CSRF_COOKIE_NAME].value == secret


@pytest.mark.django_db(transaction=True)
def test_session_written_by_a_view_is_saved_on_the_server_and_the_cookie_holds_its_id():
    def log_in(request):
        request.session["seen"] = True
        return HttpResponse("ok")

    _, response = serve(log_in)
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert Session.objects.get(session_key=cookie.value).get_decoded() == {"seen": True}
    request, _ = serve(
        lambda request: HttpResponse("ok"),
        cookie=f"{settings.SESSION_COOKIE_NAME}={cookie.value}",
    )
    assert request.session["seen"] is True


@pytest.mark.django_db(transaction=True)
def test_unreadable_session_cookie_is_deleted():
    request, response = serve(
        lambda request: HttpResponse(str(request.session.get("seen"))),
        cookie=f"{settings.SESSION_COOKIE_NAME}=forged",
    )
    assert response.content == b"None"
    assert response.cookies[settings.SESSION_COOKIE_NAME]["max-age"] == 0
