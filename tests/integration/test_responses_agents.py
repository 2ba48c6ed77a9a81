"""
The OpenAI Agents SDK, unchanged, against /v1/responses: an Agent with a function tool run to
its final answer, whole and streamed, on a chat-completions-only model server.
"""

import asyncio

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

from tests.conftest import API_KEY

set_tracing_disabled(True)  # nothing is exported anywhere


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"18 C and sunny in {city}"


def _agent(client: openai.AsyncOpenAI) -> Agent:
    return Agent(
        name="weather",
        instructions="You answer weather questions with the get_weather tool.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="fake-llm", openai_client=client),
    )


def _expected_turn_two(upstream) -> None:
    first, second = upstream.requests[-2:]
    assert first.body["messages"] == [
        {"role": "system", "content": "You answer weather questions with the get_weather tool."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert first.body["tools"][0]["function"]["name"] == "get_weather"
    assert first.body["tools"][0]["function"]["strict"] is True
    assert second.body["messages"][1:] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "18 C and sunny in Paris"},
    ]


def _client(gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture
def weather_loop(upstream):
    upstream.behave(
        tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}],
        tool_calls_first=1,
        content="It is 18 C and sunny in Paris.",
        argument_piece=3,
    )
    return upstream


def test_agent_runs_a_function_tool_to_its_final_answer(gateway, weather_loop):
    async def run():
        async with _client(gateway) as client:
            return await Runner.run(_agent(client), "Weather in Paris?")

    result = asyncio.run(run())
    assert result.final_output == "It is 18 C and sunny in Paris."
    assert len(weather_loop.requests) == 2
    _expected_turn_two(weather_loop)
    usage = result.context_wrapper.usage
    assert usage.requests == 2
    assert usage.output_tokens > 0


def test_agent_streamed_run(gateway, weather_loop):
    async def run():
        async with _client(gateway) as client:
            result = Runner.run_streamed(_agent(client), "Weather in Paris?")
            kinds = [event.type async for event in result.stream_events()]
            return result, kinds

    result, kinds = asyncio.run(run())
    assert result.final_output == "It is 18 C and sunny in Paris."
    assert "run_item_stream_event" in kinds
    _expected_turn_two(weather_loop)
    assert all(request.body.get("stream") is True for request in weather_loop.requests)
