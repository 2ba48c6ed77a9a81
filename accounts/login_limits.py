"""
Login attempts limited, per account and per address, on every page that takes a password
or a key: the admin's login (staff), the browsable API's "Log in with API key", and any
other login page, which calls `login_allowed()` and `record_failed_login()` here.

django-axes counts the failures (in the database, so every worker and host sees the same
counts, and staff see and clear lock-outs in the admin under "Axes"). After
`LOGIN__FAILURE_LIMIT` failures for one account, or from one address, further attempts are
refused with 429 for `LOGIN__LOCKOUT_MINUTES`, even with the right password. The admin's
login goes through axes' authentication backend; the key login page, which has no user,
counts its failures under the key's public prefix (`api-key:llm_ab12cd34`).
"""

from __future__ import annotations

import logging
import math

from axes.handlers.proxy import AxesProxyHandler
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

# The credentials field axes counts accounts by (AXES_USERNAME_FORM_FIELD in the settings).
ACCOUNT_FIELD = "username"

LOCKED_OUT_DETAIL = (
    "Too many failed logins for this account or from this address: try again in {minutes} "
    "minute(s), or ask staff to clear the lock-out (admin, Axes, Access attempts)."
)


def client_ip(request: HttpRequest) -> str | None:
    """
    The address attempts are counted against: the connection's, or the one a trusted proxy
    writes in `LOGIN__CLIENT_IP_HEADER` (its last entry, which that proxy added).
    """
    header = settings.LOGIN_CLIENT_IP_HEADER
    if header:
        value = request.META.get("HTTP_" + header.upper().replace("-", "_"), "")
        forwarded = value.rsplit(",", 1)[-1].strip()
        if forwarded:
            return forwarded
    return request.META.get("REMOTE_ADDR")


def lockout_minutes() -> int:
    return max(1, math.ceil(settings.LOGIN_LOCKOUT_MINUTES))


def lockout_response(
    request: HttpRequest, original_response=None, credentials: dict | None = None
) -> HttpResponse:
    """axes' answer to a locked-out attempt: 429, saying for how long and who can clear it."""
    response = HttpResponse(
        LOCKED_OUT_DETAIL.format(minutes=lockout_minutes()),
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(lockout_minutes() * 60)
    return response


def login_allowed(request: HttpRequest, account: str) -> bool:
    """Whether an attempt for `account` from this request's address may be checked at all."""
    return AxesProxyHandler.is_allowed(request, {ACCOUNT_FIELD: account})


def record_failed_login(request: HttpRequest, account: str) -> None:
    """Count a failed attempt for `account` and for this request's address."""
    user_login_failed.send(
        sender=__name__,
        credentials={ACCOUNT_FIELD: account},
        request=request,
    )


@receiver(user_locked_out)
def log_lockout(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    # One line per lock-out (axes' own, verbose logging is off: it writes a line at start-up).
    logger.warning(
        "Login locked out for %s minute(s): account %r, address %s",
        lockout_minutes(),
        username,
        ip_address,
    )
