from http import HTTPStatus

import pytest

from tests.waiting import room_in_the_minute

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


def test_me_is_counted_against_the_request_limit_like_any_request(client, make_key):
    # /v1/me reads the quotas at the real time too: the clock cannot stand still for this one.
    room_in_the_minute()  # the requests below count in one minute
    created = make_key(name="counted", requests_per_minute=3)
    auth = {"Authorization": f"Bearer {created.full_key}"}
    statuses = [client.get("/v1/me", headers=auth).status_code for _ in range(4)]
    assert statuses == [HTTPStatus.OK] * 3 + [HTTPStatus.TOO_MANY_REQUESTS]
    refused = client.get("/v1/me", headers=auth)
    assert int(refused["Retry-After"]) >= 1
    assert client.get("/v1/me", headers=auth).json()["detail"]


def test_me_reads_one_keys_rows_through_the_key_prefix_indexes(make_key):
    import datetime as dt

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from usage.models import UsageHourly
    from usage.selectors import key_totals

    if connection.vendor != "sqlite":
        pytest.skip("reads SQLite's query plans (EXPLAIN QUERY PLAN)")

    now = dt.datetime.now(dt.UTC)
    UsageHourly.objects.create(hour=now - dt.timedelta(hours=2), key_prefix="abcd1234")
    with CaptureQueriesContext(connection) as queries:
        key_totals(key_prefix="abcd1234", since=now - dt.timedelta(days=1))
    plans = []
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            if "key_prefix" in query["sql"]:
                cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
                plans.append(" ".join(str(row) for row in cursor.fetchall()))
    assert len(plans) == 2
    assert "usage_hourly_key_prefix_hour" in plans[0] or "usage_hourly_key_prefix_hour" in plans[1]
    assert any("usage_key_prefix_time" in plan for plan in plans)
