import datetime as dt
from http import HTTPStatus

import pytest

from usage.models import UsageRecord
from usage.rollups import rollup_usage

pytestmark = [pytest.mark.urls("tests.teams_urls"), pytest.mark.django_db]


def test_usage_page_renders_charts_and_tables_from_the_rollups(admin_client):
    now = dt.datetime.now(dt.UTC)
    UsageRecord.objects.bulk_create(
        [
            UsageRecord(
                created_at=now - dt.timedelta(days=day),
                key_prefix="abcdefgh",
                team_name="research",
                model="small",
                status=500 if day == 1 else 200,
                prompt_tokens=100 * day,
                completion_tokens=5,
            )
            for day in range(5)
        ]
    )
    rollup_usage(now=now)
    response = admin_client.get("/admin/usage/usagehourly/?days=7")
    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    assert page.count('<figure class="usage-chart">') == 3 and "<rect" in page
    assert "llm_abcdefgh_…" in page and "research" in page and "small" in page
    assert "Server error rate per day" in page
    assert "default-src 'self'" in response["Content-Security-Policy"]


def test_usage_page_is_for_staff_only(client):
    response = client.get("/admin/usage/usagehourly/")
    assert response.status_code == HTTPStatus.FOUND
    assert "/admin/login/" in response["Location"]
