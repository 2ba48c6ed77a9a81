"""
Liveness and readiness probes (no key needed).

`/readyz` answers with a small summary, whatever the number of models; `?details=true` adds
the per-model, per-server report for Prometheus' token, a staff session or an API key (a key
limited to some models sees those). Both come from `health.readiness`, which probes at most
once per `HEALTH__READYZ_CACHE_SECONDS` per worker.
"""

from __future__ import annotations

from http import HTTPStatus

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from accounts.authentication import BearerOrApiKeyAuthentication, StaffSessionAuthentication
from api.views import AsyncApiView
from health.readiness import reports, visible_to
from limits import redis_client
from observability.apis import bearer_matches

DETAILS_PARAMETER = "details"
DETAILS_NEED_CREDENTIALS = (
    "Readiness details need the metrics token (Authorization: Bearer <METRICS__TOKEN>), "
    "an API key (X-API-Key) or a staff session; /readyz without `details` needs none."
)


class HealthApi(AsyncApiView):
    """Liveness: the process serves HTTP. No key, no model call."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]

    @extend_schema(
        tags=["Health"],
        summary="Liveness: is the server up?",
        auth=[],
        responses={200: OpenApiResponse(description='Always `{"status": "ok"}`.')},
    )
    async def get(self, request):
        return Response({"status": "ok"})


def wants_details(request) -> bool:
    value = request.query_params.get(DETAILS_PARAMETER)
    if value is None:
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no", ""):
        return False
    raise exceptions.ValidationError({DETAILS_PARAMETER: "Use details=true or details=false."})


def details_viewer(request):
    """
    Who may see the details: None for the metrics token or a staff session (every model),
    else the API key's `may_use` (or None for a key without limits). 401 for anyone else.
    """
    token = settings.METRICS["token"]
    if token and bearer_matches(request.headers.get("Authorization", ""), token):
        return None
    staff = StaffSessionAuthentication().authenticate(request)
    if staff is not None:
        return None
    try:
        principal, _ = BearerOrApiKeyAuthentication().authenticate(request)
    except (exceptions.NotAuthenticated, exceptions.AuthenticationFailed):
        raise exceptions.NotAuthenticated(DETAILS_NEED_CREDENTIALS) from None
    may_use = getattr(principal, "may_use", None)
    return None if may_use is None else (lambda name: may_use(name))


class ReadinessApi(HealthApi):
    """Readiness: every configured model can answer."""

    @extend_schema(
        tags=["Health"],
        summary="Readiness: can every configured model answer?",
        auth=[],
        description="200 when each configured model has a reachable, non-ejected server or its "
        "embedded model is loaded; 503 otherwise. A summary by default (how many models are "
        "ready, the first names that are not); `details=true` adds the per-model, per-server "
        "status for the metrics token, an API key or a staff session. Never shows secrets.",
        parameters=[
            OpenApiParameter(
                DETAILS_PARAMETER,
                OpenApiTypes.BOOL,
                description="Add the per-model and per-server report (needs credentials).",
            )
        ],
        responses={
            200: OpenApiResponse(description="Ready."),
            401: OpenApiResponse(description="`details` asked for without credentials."),
            503: OpenApiResponse(description="Not ready; see the summary (or the details)."),
        },
    )
    def get_authenticate_header(self, request) -> str:
        # A 401 for `details` without credentials (DRF would make it a 403 without this).
        return 'Bearer realm="llmapi"'

    async def get(self, request):
        details = wants_details(request)
        viewer = details_viewer(request) if details else None
        readiness = reports()
        body = dict(await readiness.summary())
        if details:
            full = visible_to(await readiness.report(), viewer)
            body["models"] = full["models"]
        # The shared limits: not ready only when Redis is down and requests would be refused.
        limits = await redis_client.redis_status()
        body["limits"] = limits
        if limits["redis"] == "down" and limits["mode"] == "closed":
            body["ready"] = False
        status = HTTPStatus.OK if body["ready"] else HTTPStatus.SERVICE_UNAVAILABLE
        response = Response(body, status=status)
        response["Cache-Control"] = "no-store"
        return response
