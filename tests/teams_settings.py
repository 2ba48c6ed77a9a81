"""The gateway's settings with the small URLconf of tests/teams_urls.py (admin, /v1/me, /whoami)."""

from llmapi.settings import *  # noqa: F403

ROOT_URLCONF = "tests.teams_urls"
