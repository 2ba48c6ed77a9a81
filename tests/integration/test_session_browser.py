"""
In a real headless Chromium: a staff user logs in to the admin, the session cookie is copied,
the user logs out, and the copied cookie, replayed in another browser, opens nothing.
"""

import pytest
from playwright.sync_api import expect

from tests.integration.test_browser import browser, page  # noqa: F401
from tests.integration.test_usage_browser import orm_beside_playwright  # noqa: F401

pytestmark = [
    pytest.mark.urls("tests.teams_urls"),
    pytest.mark.usefixtures("orm_beside_playwright"),
]


def test_an_admin_cookie_copied_before_logout_opens_nothing_after_it(
    browser,  # noqa: F811
    page,  # noqa: F811
    live_server,
    transactional_db,
    django_user_model,
    settings,
):
    django_user_model.objects.create_superuser("ops", "ops@example.com", "a-long-password-1")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/accounts/apikey/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "a-long-password-1")
    page.click("input[type=submit]")
    expect(page.locator("#content h1")).to_contain_text("API key")
    copied = [c for c in page.context.cookies() if c["name"] == settings.SESSION_COOKIE_NAME]
    assert copied and copied[0]["httpOnly"]

    with page.expect_navigation():
        page.click("#logout-form button")  # the admin's "Log out"
    assert "/admin/accounts/apikey/" not in page.url

    thief = browser.new_context()
    thief.add_cookies(copied)
    stolen = thief.new_page()
    stolen.goto(f"{live_server.url}/admin/accounts/apikey/")
    assert "/admin/login/" in stolen.url
    expect(stolen.locator("#id_username")).to_be_visible()
    thief.close()
