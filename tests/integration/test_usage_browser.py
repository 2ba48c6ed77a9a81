"""
The admin's usage page in a real headless Chromium (Debian's package, driven by Playwright):
a staff user logs in and sees the charts, and the page loads nothing from another origin.
The screenshot is saved as test-artifacts/screenshots/usage-dashboard.png.
"""

import datetime as dt

import pytest
from playwright.sync_api import expect

from tests.integration.test_browser import assert_same_origin, browser, page, screenshot  # noqa: F401
from usage.models import UsageRecord
from usage.rollups import rollup_usage

pytestmark = [
    pytest.mark.urls("tests.teams_urls"),
    pytest.mark.usefixtures("orm_beside_playwright"),
]


@pytest.fixture(scope="module")
def orm_beside_playwright():
    """
    Playwright's sync API keeps an event loop in this thread, between its calls; the test's
    own ORM calls (fixtures and their teardown, not the server) run while it is idle.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture
def usage_data(transactional_db):
    now = dt.datetime.now(dt.UTC)
    rows = []
    for day in range(10):
        for index in range(5 + day * 3):
            rows.append(
                UsageRecord(
                    created_at=now - dt.timedelta(days=day, minutes=index),
                    key_prefix=("k7x2m9qa", "p3n8w1zt", "")[index % 3],
                    team_name=("research", "support", "")[index % 3],
                    model=("qwen2.5-7b", "smollm2")[index % 2],
                    endpoint="/v1/chat/completions",
                    status=500 if index % 11 == 0 else 429 if index % 7 == 0 else 200,
                    prompt_tokens=120 + index,
                    completion_tokens=40 + day * 10,
                    latency_ms=300 + index * 5,
                )
            )
    UsageRecord.objects.bulk_create(rows)
    rollup_usage(now=now)


def test_staff_user_sees_the_usage_charts(page, live_server, usage_data, django_user_model):  # noqa: F811
    django_user_model.objects.create_superuser("ops", "ops@example.com", "a-long-password-1")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/usage/usagehourly/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "a-long-password-1")
    page.click("input[type=submit]")
    expect(page.locator("figure.usage-chart")).to_have_count(3)
    expect(page.locator("figure.usage-chart").first.locator("rect")).to_have_count(14)
    expect(page.locator("#content-main")).to_contain_text("llm_k7x2m9qa_…")
    expect(page.locator("#content-main")).to_contain_text("research")
    screenshot(page, "usage-dashboard.png")
    assert_same_origin(page, live_server.url)
