"""Fixtures shared by the accounts, limits and usage tests: a pepper, a team, a key factory."""

from __future__ import annotations

import pytest

from accounts import services
from accounts.models import Team


@pytest.fixture(autouse=True)
def key_pepper(settings, tmp_path):
    settings.API_KEYS_PEPPER = "test-pepper-not-secret"
    settings.API_KEYS_PEPPER_FILE = tmp_path / "pepper"
    # A fresh runtime for each test: no pepper, cached key or last-used time from another.
    yield


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="research")


@pytest.fixture
def make_key(team):
    def make(**kwargs) -> services.CreatedKey:
        kwargs.setdefault("name", "ci")
        kwargs.setdefault("team", team)
        return services.create_api_key(**kwargs)

    return make
