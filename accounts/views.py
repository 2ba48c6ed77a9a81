"""
"Log in with API key": the browsable API's key login and logout pages.
"""

from __future__ import annotations

from http import HTTPStatus

from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from accounts.key_sessions import (
    INVALID_KEY_DETAIL,
    log_in_session,
    log_out_session,
    session_client,
)
from accounts.keys import KEY_PREFIX
from accounts.login_limits import lockout_response, login_allowed, record_failed_login
from infra.content_security import OFFLINE_PAGE_CSP

# Where "Log in with API key" leads when the page was opened directly.
BROWSABLE_API_HOME = "/text_model/chat/completion"


def key_login_account(key: str) -> str:
    """
    What failed key logins are counted under, besides the address: a database key's public
    prefix (`api-key:llm_ab12cd34`), or one account for every other key.
    """
    head, _, rest = key.partition("_")
    prefix = rest.partition("_")[0]
    if f"{head}_" == KEY_PREFIX and prefix.isalnum():
        return f"api-key:{KEY_PREFIX}{prefix[:32]}"
    return "api-key:other"


def safe_next_url(request) -> str:
    """The page to return to after logging in or out: only ever one on this server."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return BROWSABLE_API_HOME


@never_cache
@csrf_protect
def api_key_login(request):
    """
    "Log in with API key" for the browsable API: the key is checked exactly as the
    X-API-Key header is, and the browser session remembers it (see authentication.py).
    Failed attempts are limited like every login (accounts/login_limits.py).
    """
    next_url = safe_next_url(request)
    error, status = "", HTTPStatus.OK
    if request.method == "POST":
        key = request.POST.get("key", "").strip()
        account = key_login_account(key)
        if not login_allowed(request, account):
            return lockout_response(request)
        if log_in_session(request, key) is not None:
            return HttpResponseRedirect(next_url)
        record_failed_login(request, account)
        error, status = INVALID_KEY_DETAIL, HTTPStatus.FORBIDDEN
    context = {"next": next_url, "error": error, "client": session_client(request)}
    response = render(request, "accounts/api_key_login.html", context, status=status)
    response["Content-Security-Policy"] = OFFLINE_PAGE_CSP
    return response


@never_cache
@require_POST
@csrf_protect
def api_key_logout(request):
    log_out_session(request)
    return HttpResponseRedirect(safe_next_url(request))
