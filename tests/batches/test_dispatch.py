"""How a batch line calls: as its batch's owner, at the batch priority, and cut-able."""

from __future__ import annotations

from types import SimpleNamespace

from batches import dispatch
from responses.services import ResponseAnswer


def test_a_line_runs_at_the_batch_priority_and_may_be_cut():
    caller = dispatch.batch_caller(SimpleNamespace(), "req-1")
    assert (caller.priority, caller.preemptible, caller.endpoint) == ("batch", True, "v1/batches")


async def test_a_responses_line_is_cut_able_too(monkeypatch):
    seen = {}

    async def create_response(request, *, data, sent=None, preemptible=False):
        seen["preemptible"] = preemptible
        return ResponseAnswer(body={"id": "resp_1"}, headers={})

    monkeypatch.setattr(dispatch, "create_response", create_response)
    caller = dispatch.batch_caller(SimpleNamespace(), "req-1")
    body = {"model": "m", "input": "hi"}
    assert await dispatch.ENDPOINTS["/v1/responses"].run(caller, body) == {"id": "resp_1"}
    assert seen == {"preemptible": True}
