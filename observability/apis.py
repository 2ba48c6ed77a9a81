import asyncio
import hmac
from http import HTTPStatus

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views import View

from observability.exposition import render_metrics
from observability.metrics import record_gc_pauses


def bearer_matches(header: str, token: str) -> bool:
    scheme, _, presented = header.partition(" ")
    # Constant time, so response timing says nothing about how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


class MetricsApi(View):
    """GET /metrics for Prometheus. Answers 404 unless METRICS__TOKEN is set."""

    http_method_names = ["get"]

    async def get(self, request):
        token = settings.METRICS["token"]
        if not token:
            return JsonResponse({"detail": "Not found."}, status=HTTPStatus.NOT_FOUND)
        if not bearer_matches(request.headers.get("Authorization", ""), token):
            response = JsonResponse(
                {"detail": "Metrics need the Authorization: Bearer <METRICS__TOKEN> header."},
                status=HTTPStatus.UNAUTHORIZED,
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        record_gc_pauses()
        # In multiprocess mode a scrape reads every worker's files: off the event loop.
        body, content_type = await asyncio.to_thread(render_metrics, request.headers.get("Accept"))
        response = HttpResponse(body, content_type=content_type)
        response["Cache-Control"] = "no-store"
        return response
