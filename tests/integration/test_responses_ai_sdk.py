"""
The Vercel AI SDK's openai provider, which speaks the Responses API (`openai.responses(...)`),
unchanged, against /v1/responses on a chat-completions-only model server (pinned in
tests/package-lock.json; tests/clients/ai_sdk_openai_responses.mjs is the app).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import API_KEY, ROOT

SCRIPT = Path(__file__).resolve().parents[1] / "clients" / "ai_sdk_openai_responses.mjs"

pytestmark = pytest.mark.skipif(
    not (ROOT / "tests" / "node_modules" / "@ai-sdk" / "openai").exists(),
    reason="npm ci --prefix tests installs the AI SDK (scripts/test does)",
)


def _ai_sdk(gateway, mode: str) -> dict:
    env = {**os.environ, "LLMAPI_URL": gateway.url, "LLMAPI_KEY": API_KEY}
    done = subprocess.run(
        [shutil.which("node") or "node", str(SCRIPT), mode],  # noqa: S607
        cwd=SCRIPT.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_stream_text(gateway, upstream):
    got = _ai_sdk(gateway, "stream")
    assert got["text"] == "The capital of France is Paris."
    assert got["parts"] == ["The ", "capital ", "of ", "France ", "is ", "Paris."]
    assert got["finishReason"] == "stop"
    assert got["usage"]["outputTokens"] == 6
    assert got["responseId"].startswith("resp_")
    assert upstream.last_request.body == {
        "model": "fake-llm",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 100,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_tool_loop(gateway, upstream):
    upstream.behave(
        tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}],
        tool_calls_first=1,
        argument_piece=2,
        content="It is 18 C and sunny in Paris.",
    )
    got = _ai_sdk(gateway, "tools")
    assert got["calls"] == ["Paris"]
    assert got["text"] == "It is 18 C and sunny in Paris."
    assert got["steps"] == 2
    assert got["finishReason"] == "stop"
    first, second = (r.body for r in upstream.requests)
    assert first["tools"][0]["function"]["name"] == "get_weather"
    # The SDK sends the call back with its arguments re-serialized from the parsed input.
    assert second["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "18 C and sunny in Paris"},
    ]
