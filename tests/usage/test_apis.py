from http import HTTPStatus

import pytest

pytestmark = [pytest.mark.urls("tests.teams_urls"), pytest.mark.django_db(transaction=True)]


def test_me_shows_a_key_its_own_limits(client, make_key):
    created = make_key(name="mine", requests_per_minute=30)
    response = client.get("/v1/me", headers={"Authorization": f"Bearer {created.full_key}"})
    assert response.status_code == HTTPStatus.OK
    body = response.json()
    assert body["key"]["name"] == "mine"
    assert body["limits"]["key"]["requests_per_minute"]["limit"] == 30
    assert body["usage"]["today"]["requests"] == 0


def test_me_without_a_key_is_401(client):
    assert client.get("/v1/me").status_code == HTTPStatus.UNAUTHORIZED
