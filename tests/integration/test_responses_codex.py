"""
Codex CLI itself (`@openai/codex`, pinned in tests/package-lock.json) with the gateway as a
custom model provider speaking the Responses API, in a throw-away CODEX_HOME: it runs offline
against the local base URL and prints the model's answer.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import API_KEY, ROOT

CODEX = ROOT / "tests" / "node_modules" / ".bin" / "codex"

pytestmark = pytest.mark.skipif(
    not CODEX.exists(), reason="npm ci --prefix tests installs Codex CLI (scripts/test does)"
)


def _codex(gateway, tmp_path: Path, prompt: str) -> subprocess.CompletedProcess:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        'model = "fake-llm"\n'
        'model_provider = "llmapi"\n'
        "\n"
        "[model_providers.llmapi]\n"
        'name = "llmapi"\n'
        f'base_url = "{gateway.url}/v1"\n'
        'env_key = "LLMAPI_API_KEY"\n'
        'wire_api = "responses"\n'
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CODEX_HOME": str(home),
        "LLMAPI_API_KEY": API_KEY,
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", "--sandbox", "read-only", prompt],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_codex_exec_prints_the_models_answer(gateway, upstream, tmp_path):
    upstream.behave(content="Paris is the capital of France.")
    result = _codex(gateway, tmp_path, "What is the capital of France?")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Paris is the capital of France." in result.stdout
    [sent] = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert sent["stream"] is True
    assert sent["tool_choice"] == "auto"
    # Codex's instructions and developer message make the one leading system message.
    roles = [message["role"] for message in sent["messages"]]
    assert roles == ["system", "user", "user"]
    assert "What is the capital of France?" in json.dumps(sent["messages"][-1])
    names = [tool["function"]["name"] for tool in sent["tools"]]
    assert "exec_command" in names
    # The functions of its namespace tools are offered flattened; web_search is left out.
    assert any(name.startswith("multi_agent_v1__") for name in names)
    assert "web_search" not in json.dumps(sent["tools"])
    assert set(sent) == {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "stream",
        "stream_options",
    }


def test_codex_runs_a_tool_call_and_answers_after_its_result(gateway, upstream, tmp_path):
    upstream.behave(
        tool_calls=[{"name": "exec_command", "arguments": '{"cmd": "echo codex-loop"}'}],
        tool_calls_first=1,
        argument_piece=4,
        content="The command ran.",
    )
    result = _codex(gateway, tmp_path, "Run echo codex-loop.")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "The command ran." in result.stdout
    chats = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 2
    assistant, tool = chats[1]["messages"][-2:]
    assert assistant["tool_calls"] == [
        {
            "id": "call_0",
            "type": "function",
            "function": {"name": "exec_command", "arguments": '{"cmd": "echo codex-loop"}'},
        }
    ]
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == "call_0"
    assert "codex-loop" in tool["content"]  # the command's output, as Codex sent it back
