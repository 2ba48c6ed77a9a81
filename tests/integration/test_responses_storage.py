"""
Stored responses against a real gateway process and its database: who may read them (the key
that made them, its team when the operator says so), their bounds (size, number per key,
retention), and the ledger rows of /v1/responses calls, whole and streamed.
"""

from http import HTTPStatus

import httpx
import openai
import pytest

from tests.conftest import API_KEY
from tests.integration.test_teams_gateway import ledger_rows, manage, prefix_of, wait_for


def _gateway(gateways, upstream, tmp_path_factory, **env):
    database = tmp_path_factory.mktemp("responses") / "gateway.sqlite3"
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        DATABASE__SQLITE_PATH=str(database),
        USAGE__FLUSH_INTERVAL="0.2",
        **env,
    )
    return gateway, database


def _key(database, team: str, name: str) -> str:
    return manage(database, "create_api_key", "--team", team, "--name", name)


def _sdk(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def shared(gateways, fake_upstream_server, tmp_path_factory):
    return _gateway(
        gateways, fake_upstream_server, tmp_path_factory, RESPONSES__SHARE_WITH_TEAM="true"
    )


@pytest.fixture(scope="module")
def private(gateways, fake_upstream_server, tmp_path_factory):
    return _gateway(gateways, fake_upstream_server, tmp_path_factory)


def test_a_teams_keys_share_responses_when_the_operator_says_so(shared, upstream):
    gateway, database = shared
    alice, bob = _key(database, "blue", "alice"), _key(database, "blue", "bob")
    mallory = _key(database, "red", "mallory")
    with _sdk(gateway, alice) as a, _sdk(gateway, bob) as b, _sdk(gateway, mallory) as m:
        response = a.responses.create(model="fake-llm", input="Hello")
        assert b.responses.retrieve(response.id).output_text == response.output_text
        b.responses.create(model="fake-llm", previous_response_id=response.id, input="More")
        with pytest.raises(openai.NotFoundError):
            m.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            m.responses.delete(response.id)


def test_by_default_only_the_key_that_made_a_response_sees_it(private, upstream):
    gateway, database = private
    alice, bob = _key(database, "blue", "alice"), _key(database, "blue", "bob")
    with _sdk(gateway, alice) as a, _sdk(gateway, bob) as b:
        response = a.responses.create(model="fake-llm", input="Hello")
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.create(model="fake-llm", previous_response_id=response.id, input="x")
        assert a.responses.retrieve(response.id).id == response.id


def test_ledger_counts_whole_and_streamed_responses_with_the_servers_usage(private, upstream):
    gateway, database = private
    key = _key(database, "blue", "ledger")
    with _sdk(gateway, key) as sdk:
        sdk.responses.create(model="fake-llm", input="What is the capital of France?")
        with sdk.responses.stream(model="fake-llm", input="What is the capital?") as stream:
            final = stream.get_final_response()
    rows = wait_for(lambda: len(ledger_rows(database, prefix_of(key))) == 2 or None)
    assert rows
    whole, streamed = ledger_rows(database, prefix_of(key))
    assert whole[:4] == ("v1/responses", 200, 6, 6)
    assert streamed[:4] == ("v1/responses", 200, final.usage.input_tokens, 6)
    assert final.usage.output_tokens == 6


def test_retention_zero_keeps_nothing_retrievable(gateways, upstream, tmp_path_factory):
    gateway, _ = _gateway(gateways, upstream, tmp_path_factory, RESPONSES__RETENTION_DAYS="0")

    with _sdk(gateway, API_KEY) as sdk:
        response = sdk.responses.create(model="fake-llm", input="Hello")
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(response.id)


def test_a_key_keeps_at_most_its_maximum_the_oldest_go(gateways, upstream, tmp_path_factory):
    gateway, _ = _gateway(gateways, upstream, tmp_path_factory, RESPONSES__MAX_PER_KEY="2")

    with _sdk(gateway, API_KEY) as sdk:
        ids = [sdk.responses.create(model="fake-llm", input=f"Turn {n}").id for n in range(3)]
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(ids[0])
        assert [sdk.responses.retrieve(i).id for i in ids[1:]] == ids[1:]


def test_a_stored_conversation_has_a_size_bound(gateways, upstream, tmp_path_factory):
    gateway, _ = _gateway(gateways, upstream, tmp_path_factory, RESPONSES__MAX_STORED_BYTES="2000")

    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
        too_long = client.post("/v1/responses", json={"model": "fake-llm", "input": "x" * 3000})
        assert too_long.status_code == HTTPStatus.BAD_REQUEST
        assert too_long.json()["error"]["param"] == "input"
        assert "RESPONSES__MAX_STORED_BYTES" in too_long.json()["error"]["message"]
        assert upstream.requests == []
        # Not stored, it is answered: the bound is on what is kept.
        unstored = client.post(
            "/v1/responses", json={"model": "fake-llm", "input": "x" * 3000, "store": False}
        )
        assert unstored.status_code == HTTPStatus.OK
        # An answer that makes the conversation too large is returned, not kept, and says so.
        upstream.behave(content="word " * 400)
        answered = client.post("/v1/responses", json={"model": "fake-llm", "input": "Talk."})
        assert answered.status_code == HTTPStatus.OK
        assert answered.headers["X-LLMAPI-Stored"] == "false"
        missing = client.get(f"/v1/responses/{answered.json()['id']}")
        assert missing.status_code == HTTPStatus.NOT_FOUND


def test_a_stream_the_gateway_cannot_translate_fails_and_is_recorded_as_a_502(private, upstream):
    gateway, database = private
    key = _key(database, "blue", "broken")
    upstream.behave(message_extra={"tool_calls": "not a list"})
    with _sdk(gateway, key) as sdk:
        with sdk.responses.stream(model="fake-llm", input="Hi") as stream:
            events = list(stream)
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.code == "invalid_upstream_output"
    rows = wait_for(lambda: ledger_rows(database, prefix_of(key)))
    assert [row[:2] for row in rows] == [("v1/responses", 502)]
