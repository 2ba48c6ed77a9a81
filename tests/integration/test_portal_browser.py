"""
Single sign-on and the self-service portal in a real headless Chromium, against a real
OpenID Connect provider (node-oidc-provider) and a real gateway: a new team member signs in
at the provider, lands in the portal, creates a key (shown once), uses it on /v1, and signs
out of both. Screenshots are saved in test-artifacts/screenshots/ (and, with
UPDATE_SCREENSHOTS=1, in docs/screenshots/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from http import HTTPStatus

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import ROOT
from tests.integration.test_browser import assert_same_origin, browser, page, screenshot  # noqa: F401
from tests.oidc_provider import start_provider

GROUP_MAP = "ml-admins=ml:admin,ml-users=ml:member,llm-operators=staff"
ACCOUNTS = {
    "alice": {"email": "alice@example.com", "groups": ["ml-admins"], "name": "Alice"},
    "bob": {"email": "bob@example.com", "groups": ["ml-users"], "name": "Bob"},
}


@pytest.fixture(scope="module")
def identity_provider(tmp_path_factory):
    provider = start_provider(
        accounts=ACCOUNTS, log_path=tmp_path_factory.mktemp("oidc") / "provider.log"
    )
    yield provider
    provider.stop()


@pytest.fixture
def sso_gateway(gateways, upstream, identity_provider):
    return gateways.get(
        TEXT_MODEL__BASE_URL=upstream.url,
        TEXT_MODEL__MODEL_NAME="fake-llm",
        TEXT_MODEL__API_KEY="upstream-secret-token",
        **identity_provider.gateway_env(OIDC__GROUP_MAP=GROUP_MAP, AUTH__LOCAL_PASSWORDS="false"),
    )


def manage(gateway, *args: str, **env: str) -> str:
    """A `manage.py` command on the gateway's own database; its output."""
    full_env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "DATABASE__SQLITE_PATH": str(gateway.log_path.with_suffix(".sqlite3")),
        "API_KEYS__PEPPER": "test-pepper",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def exported_audit(gateway) -> list[dict]:
    return [json.loads(line) for line in manage(gateway, "export_audit").splitlines() if line]


def sign_in(tab, gateway, login: str) -> None:
    """From the portal's front door, through the provider's sign-in form, back to the portal."""
    tab.goto(f"{gateway.url}/portal/")
    expect(tab).to_have_url(f"{gateway.url}/portal/login?next=/portal/")
    tab.get_by_role("link", name="Sign in with Test IdP").click()
    tab.locator('input[name="login"]').fill(login)
    tab.locator('input[name="password"]').fill("any password")
    tab.get_by_role("button", name="Sign-in").click()
    tab.wait_for_url(f"{gateway.url}/portal/")


def test_new_member_signs_in_creates_a_key_and_uses_it(
    page,  # noqa: F811
    sso_gateway,
    upstream,
    identity_provider,
):
    gateway = sso_gateway
    page.goto(f"{gateway.url}/portal/login")
    expect(page.locator("#sso")).to_have_text("Sign in with Test IdP")
    # Local passwords are off: the password form is not offered.
    expect(page.locator('input[name="password"]')).to_have_count(0)
    screenshot(page, "portal-login.png")

    sign_in(page, gateway, "alice")
    # From here on, every request must stay on the gateway (the provider's pages are its own).
    page.requested.clear()
    page.console_errors.clear()
    expect(page.locator("header .who")).to_have_text("alice")
    team = page.locator("section.team").filter(has_text="ml")
    expect(team.locator(".badge")).to_have_text("admin")

    team.locator('input[name="name"]').fill("laptop")
    team.get_by_label("fake-llm").check()
    screenshot(page, "portal-home.png")
    team.get_by_role("button", name="Create key").click()
    full_key = (page.locator("#new-key").text_content() or "").strip()
    assert full_key.startswith("llm_")
    screenshot(page, "portal-key-created.png")

    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        models = client.get("/v1/models", headers={"Authorization": f"Bearer {full_key}"})
        assert models.status_code == HTTPStatus.OK
        assert [model["id"] for model in models.json()["data"]] == ["fake-llm"]
        chat = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {full_key}"},
            json={"model": "fake-llm", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert chat.status_code == HTTPStatus.OK, chat.text
        assert chat.json()["choices"][0]["message"]["content"]

    # Shown once: the portal lists the key by its prefix only.
    page.get_by_role("link", name="Done").click()
    row = page.locator("table.keys tr").filter(has_text="laptop")
    expect(row).to_contain_text(full_key.split("_")[1])
    assert full_key not in page.content()

    page.locator("header").get_by_role("link", name="My usage").click()
    expect(page.locator("h1")).to_have_text("My usage")
    expect(page.locator("figure.usage-chart svg").first).to_be_visible()

    page.goto(f"{gateway.url}/portal/")
    page.get_by_role("link", name="ml").first.click()
    expect(page.locator("table.members")).to_contain_text("alice")
    screenshot(page, "portal-team.png")
    assert_same_origin(page, gateway.url)
    assert page.console_errors == [], page.console_errors

    # Signing out ends the session here and at the provider (its end-session endpoint).
    page.locator("header").get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{identity_provider.issuer}/session/end**")
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(f"{gateway.url}/portal/login")
    page.goto(f"{gateway.url}/portal/")
    expect(page).to_have_url(f"{gateway.url}/portal/login?next=/portal/")
    # The provider asks again: its own session ended too.
    page.get_by_role("link", name="Sign in with Test IdP").click()
    expect(page.locator('input[name="login"]')).to_be_visible()

    actions = [(row["actor"], row["action"]) for row in exported_audit(gateway)]
    assert ("alice", "user.create") in actions
    # Her group's team is made at the first sign-in that names it (hers, or an earlier one's).
    assert ("alice", "team.create") in actions or ("bob", "team.create") in actions
    assert ("alice", "membership.create") in actions
    assert ("alice", "key.create") in actions
    key_rows = [row for row in exported_audit(gateway) if row["action"] == "key.create"]
    assert key_rows[-1]["after"]["allowed_models"] == ["fake-llm"]
    assert key_rows[-1]["ip"] == "127.0.0.1"
    assert full_key.split("_", 2)[2] not in json.dumps(exported_audit(gateway))

    # The bootstrap superuser still signs in with a password (local passwords are off for
    # everyone else) and finds all of it in the audit log.
    manage(
        gateway,
        "createsuperuser",
        "--noinput",
        "--username=root",
        "--email=root@example.com",
        DJANGO_SUPERUSER_PASSWORD="a-long-password-1",
    )
    page.goto(f"{gateway.url}/admin/login/?next=/admin/audit/auditevent/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "a-long-password-1")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{gateway.url}/admin/audit/auditevent/")
    page.fill("#searchbar", "alice")
    page.locator("#changelist-search").get_by_role("button", name="Search").click()
    results = page.locator("#result_list")
    expect(results).to_contain_text("key.create")
    expect(results).to_contain_text("membership.create")
    screenshot(page, "audit-log.png")


def test_member_rotates_their_key_and_is_refused_the_teams_usage(
    page,  # noqa: F811
    sso_gateway,
    upstream,
):
    gateway = sso_gateway
    sign_in(page, gateway, "bob")
    team = page.locator("section.team").filter(has_text="ml")
    expect(team.locator(".badge")).to_have_text("member")
    team.locator('input[name="name"]').fill("ci")
    team.get_by_role("button", name="Create key").click()
    first_key = (page.locator("#new-key").text_content() or "").strip()
    page.get_by_role("link", name="Done").click()

    row = page.locator("table.keys tr").filter(has_text=first_key.split("_")[1])
    row.get_by_label("Overlap in hours").fill("1")
    row.get_by_role("button", name="Rotate").click()
    expect(page.locator("h1")).to_contain_text("Rotated API key")
    second_key = (page.locator("#new-key").text_content() or "").strip()
    assert second_key.startswith("llm_") and second_key != first_key

    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for key in (first_key, second_key):  # the old key works during the overlap
            answer = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == HTTPStatus.OK

    page.goto(f"{gateway.url}/portal/")
    page.get_by_role("link", name="ml").first.click()
    team_id = page.url.rstrip("/").rsplit("/", 1)[1]
    expect(page.locator("table.members")).to_have_count(0)
    page.goto(f"{gateway.url}/portal/teams/{team_id}/usage")
    expect(page.locator("h1")).to_have_text("Not allowed")
    expect(page.locator(".reason")).to_contain_text("You may not see the usage of ml")
