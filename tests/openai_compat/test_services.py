"""The /v1 pass-through path of `inference.services`, against a scripted backend."""

import pytest

from inference import services
from inference.exceptions import CapabilityMissing, InvalidModelOutput
from tests.models import ANYONE, text_spec

QUESTION = [{"role": "user", "content": "hi"}]
JSON_MODE = {"type": "json_object"}


class Backend:
    def __init__(self, answers: list[dict]) -> None:
        self.answers = answers
        self.payloads: list[dict] = []

    async def create(self, payload: dict) -> dict:
        self.payloads.append(payload)
        return self.answers[min(len(self.payloads), len(self.answers)) - 1]


def answer(content, finish_reason="stop", **message) -> dict:
    return {
        "model": "m",
        "system_fingerprint": "fp",
        "choices": [
            {
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": finish_reason,
            }
        ],
    }


@pytest.fixture
def backend(monkeypatch):
    def install(*answers):
        scripted = Backend(list(answers))
        monkeypatch.setattr(services, "get_backend", lambda spec: scripted)
        return scripted

    return install


async def test_the_body_is_forwarded_without_defaults(backend):
    scripted = backend(answer("hello"))
    body = {"model": "alias", "messages": QUESTION, "top_k": 3}
    result = await services.openai_chat_completion(context=ANYONE, spec=text_spec(), body=body)
    assert scripted.payloads == [
        {"model": text_spec().served_name, "messages": QUESTION, "top_k": 3}
    ]
    assert result.raw["system_fingerprint"] == "fp"


async def test_embedded_model_keeps_its_defaults_and_refuses_tools():
    embedded = text_spec(backend="embedded", capabilities=frozenset({"chat"}))
    payload = services.passthrough_payload(
        spec=embedded, body={"messages": [{"role": "developer", "content": "x"}]}, stream=False
    )
    assert payload["temperature"] == embedded.defaults["temperature"]
    assert payload["messages"][0]["role"] == "system"
    with pytest.raises(CapabilityMissing):
        await services.openai_chat_completion(
            context=ANYONE,
            spec=embedded,
            body={"messages": QUESTION, "tools": [{"type": "function"}]},
        )


async def test_json_cut_by_max_tokens_is_returned_flagged_without_repair(backend):
    scripted = backend(answer('{"a": ', finish_reason="length"))
    body = {"messages": QUESTION, "response_format": JSON_MODE}
    result = await services.openai_chat_completion(
        context=ANYONE, spec=text_spec(json_retries=3), body=body
    )
    assert result.response == '{"a": '
    assert result.validation["truncated"] is True
    assert len(scripted.payloads) == 1


async def test_finished_invalid_json_is_repaired_at_most_json_retries_times(backend):
    scripted = backend(answer("not json"))
    body = {"messages": QUESTION, "response_format": JSON_MODE}
    with pytest.raises(InvalidModelOutput):
        await services.openai_chat_completion(
            context=ANYONE, spec=text_spec(json_retries=2), body=body
        )
    assert len(scripted.payloads) == 3


async def test_tool_calls_answer_is_not_checked_as_json(backend):
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    backend(answer(None, finish_reason="tool_calls", tool_calls=[call]))
    body = {"messages": QUESTION, "response_format": JSON_MODE, "tools": [{"type": "function"}]}
    result = await services.openai_chat_completion(context=ANYONE, spec=text_spec(), body=body)
    assert result.raw["choices"][0]["message"]["tool_calls"] == [call]


async def test_strict_tool_arguments_are_validated(backend):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    tool = {"type": "function", "function": {"name": "f", "strict": True, "parameters": schema}}
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"n": "x"}'}}
    backend(answer(None, finish_reason="tool_calls", tool_calls=[call]))
    with pytest.raises(InvalidModelOutput) as caught:
        await services.openai_chat_completion(
            context=ANYONE, spec=text_spec(), body={"messages": QUESTION, "tools": [tool]}
        )
    assert "strict schema" in str(caught.value.detail)


async def test_fallbacks_without_tool_support_are_skipped_for_tool_requests(monkeypatch):
    from types import SimpleNamespace

    from inference.exceptions import UpstreamUnavailable

    primary = text_spec(name="primary")
    no_tools = text_spec(name="no-tools", capabilities=frozenset({"chat"}))
    with_tools = text_spec(name="with-tools")
    tried: list[str] = []

    class Failing(Backend):
        async def create(self, payload: dict) -> dict:
            tried.append("primary")
            raise UpstreamUnavailable("down")

    backends = {primary: Failing([]), no_tools: Backend([]), with_tools: Backend([answer("ok")])}
    catalog = SimpleNamespace(fallbacks_of=lambda spec: [no_tools, with_tools])
    monkeypatch.setattr(services, "get_registry", lambda: SimpleNamespace(catalog=catalog))
    monkeypatch.setattr(services, "concurrency_slot", _no_slot)
    monkeypatch.setattr(services, "get_backend", lambda spec: backends[spec])
    body = {"messages": QUESTION, "tools": [{"type": "function"}]}
    result = await services.openai_chat_completion(context=ANYONE, spec=primary, body=body)
    assert (result.answered_by, result.fallback_from) == ("with-tools", "primary")
    assert tried == ["primary"] and backends[no_tools].payloads == []


def _no_slot(spec, context):
    import contextlib

    @contextlib.asynccontextmanager
    async def held():
        yield

    return held()
