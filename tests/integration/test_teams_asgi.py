"""
Keys, staff sessions and the admin through the gateway's real ASGI stack under uvicorn
(GatewayASGIHandler, the static files handler, the lifespan), with the test URLconf of
tests/teams_urls.py, on a fresh SQLite file made by ensure_database().
"""

import os
import re
import subprocess
import sys
from http import HTTPStatus

import httpx
import pytest

from tests.conftest import ROOT
from tests.fake_upstream import _free_port, wait_for_http

SETUP = """
from accounts.database import ensure_database
ensure_database()
from django.contrib.auth.models import User
from accounts.models import Team
from accounts.services import create_api_key
User.objects.create_superuser("ops", "ops@example.com", "a-long-password-1")
team = Team.objects.create(name="research", requests_per_minute=100)
print(create_api_key(name="ci", team=team).full_key)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teams-asgi")
    env = {
        **os.environ,
        "ENV_FILE": "/dev/null",
        "DJANGO_SETTINGS_MODULE": "tests.teams_settings",
        "DATABASE__SQLITE_PATH": str(tmp / "llmapi.sqlite3"),
        "API_KEYS__PEPPER_FILE": str(tmp / "pepper"),
        "API_KEY": "bootstrap-key-for-asgi",
        # A model server that is never called: no embedded model is loaded at start-up.
        "TEXT_MODEL__BASE_URL": "http://127.0.0.1:9/v1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)
    key = (
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SETUP],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = _free_port()
    log_path = tmp / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "llmapi.asgi:application", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/v1/me", process=process, log=log_path)
        yield url, key
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_database_key_and_bootstrap_key_are_accepted_with_the_seed_errors(server):
    url, key = server
    with httpx.Client(base_url=url) as client:
        assert client.get("/whoami", headers={"X-API-Key": key}).json()["kind"] == "key"
        bootstrap = client.get("/whoami", headers={"X-API-Key": "bootstrap-key-for-asgi"})
        assert bootstrap.json()["kind"] == "bootstrap"
        missing = client.get("/whoami")
        assert missing.status_code == HTTPStatus.UNAUTHORIZED
        assert missing.json() == {"detail": "Missing API Key. Please provide X-API-Key header."}
        wrong = client.get("/whoami", headers={"X-API-Key": key[:-1] + "x"})
        assert wrong.status_code == HTTPStatus.FORBIDDEN
        assert wrong.json() == {"detail": "Invalid API Key"}
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.json()["limits"]["team"]["requests_per_minute"]["limit"] == 100


def test_staff_logs_in_to_the_admin_and_uses_the_api_with_the_session(server):
    url, _ = server
    with httpx.Client(base_url=url, follow_redirects=True) as client:
        login_page = client.get("/admin/login/?next=/admin/usage/usagehourly/")
        assert "default-src 'self'" in login_page.headers["content-security-policy"]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text)
        assert token is not None
        dashboard = client.post(
            "/admin/login/?next=/admin/usage/usagehourly/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": "ops",
                "password": "a-long-password-1",
                "next": "/admin/usage/usagehourly/",
            },
        )
        assert dashboard.status_code == HTTPStatus.OK
        assert 'class="usage-chart"' in dashboard.text
        stylesheet = client.get("/static/admin/css/base.css")
        assert stylesheet.status_code == HTTPStatus.OK
        assert client.get("/whoami").json() == {"kind": "staff", "name": "ops"}
        # Unsafe methods with the session need the CSRF token.
        assert client.post("/whoami").status_code == HTTPStatus.FORBIDDEN
