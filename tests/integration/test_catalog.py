"""
The model catalog end to end: a catalog file with three models behind one gateway, aliases,
fallbacks, /v1/models, and reloading without a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http import HTTPStatus

import httpx
import pytest

from tests.conftest import API_KEY, ROOT
from tests.fake_upstream import FakeUpstream, _free_port, wait_for_http
from tests.processes import kill_tree
from tests.waiting import wait_until

QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}


def catalog_file(path, *, big, small, vision, extra=""):
    path.write_text(
        f"""\
default_text_model: big
default_image_model: vision
models:
  big:
    servers: [{big}]
    upstream_name: org/big-model
    aliases: [chat, smart]
    capabilities: [chat, tools]
    max_retries: 0
    fallbacks: [small]
  small:
    servers: [{small}]
    params: {{max_tokens: 64}}
  vision:
    servers: [{vision}]
    capabilities: [chat, vision]
{extra}"""
    )
    return path


@pytest.fixture
def small_upstream():
    server = FakeUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def catalog_gateway(gateways, upstream, small_upstream, tmp_path):
    path = catalog_file(
        tmp_path / "models.yaml",
        big=upstream.url,
        small=small_upstream.url + "/v1",
        vision=upstream.url,
    )
    gateway = gateways.get(LLMAPI_MODELS_FILE=str(path), TEXT_MODEL__BASE_URL="")
    return gateway


def test_the_default_model_answers_and_its_fallback_is_not_used(
    catalog_gateway, upstream, small_upstream
):
    with catalog_gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
    assert response.status_code == HTTPStatus.OK
    assert response.headers["X-LLMAPI-Model"] == "big"
    assert "X-LLMAPI-Fallback-From" not in response.headers
    assert upstream.last_request.body["model"] == "org/big-model"  # the upstream name is sent
    assert small_upstream.requests == []


def test_the_fallback_answers_when_every_replica_of_the_model_is_down(
    catalog_gateway, upstream, small_upstream
):
    upstream.behave(status=503)
    with catalog_gateway.client() as client:
        whole = client.post("/text_model/chat/completion", json=QUESTION)
        with client.stream("POST", "/text_model/chat/stream", json=QUESTION) as streamed:
            text = streamed.read().decode()
    assert whole.status_code == HTTPStatus.OK
    assert whole.headers["X-LLMAPI-Model"] == "small"
    assert whole.headers["X-LLMAPI-Fallback-From"] == "big"
    assert streamed.status_code == HTTPStatus.OK
    assert streamed.headers["X-LLMAPI-Fallback-From"] == "big"
    assert text == "The capital of France is Paris."
    # The fallback's own defaults apply, and it gets its own name.
    assert small_upstream.last_request.body["max_tokens"] == 64
    assert small_upstream.last_request.body["model"] == "small"


def test_a_client_error_of_the_model_does_not_fall_back(catalog_gateway, upstream, small_upstream):
    upstream.behave(status=400, error_body={"error": {"message": "bad request"}})
    with catalog_gateway.client() as client:
        response = client.post("/text_model/chat/completion", json=QUESTION)
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert small_upstream.requests == []


def test_a_model_is_chosen_by_name_or_alias_on_every_surface(
    catalog_gateway, upstream, small_upstream
):
    with catalog_gateway.client() as client:
        seed = client.post("/text_model/chat/completion", json={**QUESTION, "model": "small"})
        alias = client.post("/v1/chat/completions", json={**QUESTION, "model": "smart"})
        unknown = client.post("/text_model/chat/completion", json={**QUESTION, "model": "nope"})
    assert seed.status_code == HTTPStatus.OK and seed.headers["X-LLMAPI-Model"] == "small"
    assert alias.status_code == HTTPStatus.OK and alias.headers["X-LLMAPI-Model"] == "big"
    assert unknown.status_code == HTTPStatus.NOT_FOUND
    assert "nope" in unknown.json()["detail"]


def test_v1_models_lists_the_catalog_and_retrieves_one_or_an_openai_404(catalog_gateway):
    with catalog_gateway.client() as client:
        listed = client.get("/v1/models").json()
        one = client.get("/v1/models/chat")
        missing = client.get("/v1/models/ghost")
    assert [model["id"] for model in listed["data"]] == ["big", "small", "vision"]
    assert one.status_code == HTTPStatus.OK
    assert one.json()["id"] == "big"
    assert one.json()["aliases"] == ["chat", "smart"]
    assert missing.status_code == HTTPStatus.NOT_FOUND
    assert missing.headers["content-type"].startswith("application/json")
    assert missing.json()["error"]["code"] == "model_not_found"


def test_the_openai_sdk_retrieves_a_model(catalog_gateway):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=catalog_gateway.url + "/v1", api_key=API_KEY)
    assert client.models.retrieve("small").id == "small"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("ghost")


def test_readyz_reports_every_model_and_replica(catalog_gateway, upstream):
    with catalog_gateway.client() as client:
        report = client.get("/readyz", params={"details": "true"}).json()
    assert set(report["models"]) == {"big", "small", "vision"}
    assert report["defaults"] == {"text": "big", "image": "vision"}
    for model in report["models"].values():
        assert model["servers"][0]["reachable"] is True


def test_a_broken_catalog_file_stops_the_start_with_its_line(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  a:\n    servers: [http://h:1]\n    max_concurrency: -3\n")
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(_free_port())],
        cwd=ROOT,
        env={
            **os.environ,
            "ENV_FILE": "/dev/null",
            "API_KEY": API_KEY,
            "LLMAPI_MODELS_FILE": str(path),
            "DATABASE__SQLITE_PATH": str(tmp_path / "db.sqlite3"),
            "API_KEYS__PEPPER_FILE": str(tmp_path / "api-key-pepper"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "line 4: models.a.max_concurrency" in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_moves_a_model_without_a_restart_and_keeps_requests_in_flight(
    tmp_path, upstream, small_upstream, workers
):
    path = catalog_file(
        tmp_path / "models.yaml", big=upstream.url, small=small_upstream.url, vision=upstream.url
    )
    port = _free_port()
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "API_KEY": API_KEY,
        "LLMAPI_MODELS_FILE": str(path),
        "SERVER__PID_FILE": str(tmp_path / "llmapi.pid"),
        "DATABASE__SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "API_KEYS__PEPPER_FILE": str(tmp_path / "api-key-pepper"),
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process=process, log=log)
        upstream.behave(chunks=[f"w{i} " for i in range(10)], chunk_interval=0.1)
        moved = FakeUpstream()
        moved.start()
        in_flight: dict[str, str] = {}

        def slow_stream() -> None:
            with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
                with client.stream("POST", "/text_model/chat/stream", json=QUESTION) as response:
                    in_flight["text"] = response.read().decode()

        thread = threading.Thread(target=slow_stream)
        thread.start()
        wait_until(lambda: upstream.open_streams)  # under way on the old configuration
        # Move "small" to another server, then reload.
        catalog_file(path, big=upstream.url, small=moved.url, vision=upstream.url)
        reload = subprocess.run(
            [sys.executable, "manage.py", "reload_models"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reload.returncode == 0, reload.stderr
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
            while time.monotonic() < deadline:
                answered = [
                    client.post(
                        "/text_model/chat/completion", json={**QUESTION, "model": "small"}
                    ).status_code
                    for _ in range(4)
                ]
                assert answered == [HTTPStatus.OK] * 4
                if len(moved.requests) >= 4:  # every worker reloaded
                    break
                time.sleep(0.2)
            assert len(moved.requests) >= 4
            thread.join(timeout=30)
            assert in_flight["text"] == "".join(f"w{i} " for i in range(10))

            # A broken file is refused, by the command and by the server: the catalog stays.
            path.write_text("models: [\n")
            broken = subprocess.run(
                [sys.executable, "manage.py", "reload_models"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert broken.returncode != 0
            assert "not valid YAML" in broken.stderr
            os.kill(process.pid, signal.SIGHUP)  # as if it had been sent anyway
            wait_until(
                lambda: "The model catalog was not reloaded" in (tmp_path / "serve.log").read_text()
            )
            still = client.post("/text_model/chat/completion", json={**QUESTION, "model": "small"})
            assert still.status_code == HTTPStatus.OK
        moved.stop()
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_tree(process)
        log.close()
