"""Views standing in for the gateway's, to drive the observability middleware in tests."""

import asyncio

from django.http import JsonResponse, StreamingHttpResponse
from django.urls import path

from observability import timing
from tests.waiting import FakeClock


async def pause(seconds: float) -> None:
    """Time passing in a view: on the faked clock when the test installed one, else for real."""
    clock = timing.time
    if isinstance(clock, FakeClock):
        clock.advance(seconds)
        await asyncio.sleep(0)
    else:
        await asyncio.sleep(seconds)


async def answer(request):
    with timing.span("queue"):
        await pause(0.01)
    timing.begin("upstream_ttfb")
    await pause(0.02)
    timing.end("upstream_ttfb")
    await pause(0.005)  # the gateway's own work
    timing.mark("ttft")
    timing.add("upstream", 0.02)
    timing.annotate(
        model=request.GET.get("model"),
        team="research",
        key_prefix="llm_abcd1234",
        prompt_tokens=11,
        completion_tokens=5,
    )
    return JsonResponse({"response": "hi"}, status=int(request.GET.get("status", 200)))


async def stream(request):
    timing.annotate(model=request.GET.get("model"))

    async def chunks():
        for index in range(3):
            await pause(0.01)
            if index == 0:
                timing.mark("ttft")
            yield f"data: {index}\n\n".encode()
        timing.annotate(completion_tokens=3)

    return StreamingHttpResponse(chunks(), content_type="text/event-stream")


async def healthz(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("answer", answer, name="text-completion"),
    path("stream", stream, name="text-stream"),
    path("healthz", healthz, name="healthz"),
]
