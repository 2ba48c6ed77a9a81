"""Prefix-aware routing over two real fake model servers, end to end."""

from http import HTTPStatus

from tests.fake_upstream import FakeUpstream


def turn(conversation: int, number: int) -> list[dict]:
    messages = [{"role": "system", "content": f"You are agent {conversation}. " * 50}]
    for step in range(number + 1):
        if step:
            messages.append({"role": "assistant", "content": f"done {step}"})
        messages.append({"role": "user", "content": f"step {step}"})
    return messages


def served_by(upstreams: list[FakeUpstream], conversation: int) -> set[int]:
    marker = f"You are agent {conversation}. "
    return {
        index
        for index, upstream in enumerate(upstreams)
        for request in upstream.requests
        if request.path.endswith("/chat/completions")
        and request.body["messages"][0]["content"].startswith(marker)
    }


def test_each_conversation_stays_on_one_replica_by_default(gateways, upstream, second_upstream):
    model = f"prefix-{second_upstream.port}"
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=f"{upstream.url},{second_upstream.url}", TEXT_MODEL__MODEL_NAME=model
    )
    with gateway.client() as client:
        for number in range(3):
            for conversation in range(6):
                answer = client.post(
                    "/v1/chat/completions",
                    json={"model": model, "messages": turn(conversation, number)},
                )
                assert answer.status_code == HTTPStatus.OK
        ready = client.get("/readyz", params={"details": "true"}).json()
    assert ready["models"]["text"]["routing"] == "prefix"
    upstreams = [upstream, second_upstream]
    assert all(len(served_by(upstreams, c)) == 1 for c in range(6))


def test_round_robin_sends_each_turn_to_the_next_replica(gateways, upstream, second_upstream):
    model = f"robin-{second_upstream.port}"
    gateway = gateways.get(
        TEXT_MODEL__BASE_URL=f"{upstream.url},{second_upstream.url}",
        TEXT_MODEL__MODEL_NAME=model,
        TEXT_MODEL__ROUTING="round_robin",
    )
    with gateway.client() as client:
        for number in range(2):
            answer = client.post(
                "/v1/chat/completions", json={"model": model, "messages": turn(0, number)}
            )
            assert answer.status_code == HTTPStatus.OK
    assert served_by([upstream, second_upstream], 0) == {0, 1}
