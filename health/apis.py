"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

from http import HTTPStatus

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from api.views import AsyncApiView
from inference import services
from limits import redis_client


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


class ReadinessApi(HealthApi):
    """Readiness: every configured model can answer."""

    @extend_schema(
        tags=["Health"],
        summary="Readiness: can every configured model answer?",
        auth=[],
        description="200 when each configured model has a reachable, non-ejected server or its "
        "embedded model is loaded; 503 otherwise. Shows per-model status, never secrets.",
        responses={
            200: OpenApiResponse(description="Ready."),
            503: OpenApiResponse(description="Not ready; see the per-model status."),
        },
    )
    async def get(self, request):
        report = await services.readiness()
        # The shared limits: not ready only when Redis is down and requests would be refused.
        limits = await redis_client.redis_status()
        report["limits"] = limits
        if limits["redis"] == "down" and limits["mode"] == "closed":
            report["ready"] = False
        status = HTTPStatus.OK if report["ready"] else HTTPStatus.SERVICE_UNAVAILABLE
        return Response(report, status=status)
