"""My usage shows my keys only; a team's usage shows that team only, to its admins."""

from __future__ import annotations

import datetime as dt
from http import HTTPStatus

import pytest

from usage.models import UsageHourly

pytestmark = pytest.mark.django_db


@pytest.fixture
def usage(world):
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    for key, tokens in (
        (world.member_key, 111),
        (world.colleague_key, 222),
        (world.other_key, 999),
    ):
        UsageHourly.objects.create(
            hour=hour,
            key_prefix=key.prefix,
            team_name=key.team.name,
            model="small",
            requests=3,
            prompt_tokens=tokens,
            completion_tokens=0,
        )


def test_my_usage_shows_only_my_keys(world, as_user, usage):
    page = as_user(world.member).get("/portal/usage").content.decode()
    assert f"llm_{world.member_key.prefix}_" in page and "<svg" in page
    assert world.colleague_key.prefix not in page and world.other_key.prefix not in page


def test_team_usage_shows_only_the_team(world, as_user, usage):
    response = as_user(world.team_admin).get(f"/portal/teams/{world.ml.pk}/usage")
    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    assert world.member_key.prefix in page and world.colleague_key.prefix in page
    assert world.other_key.prefix not in page
    assert "<td>999</td>" not in page


def test_a_bad_days_parameter_falls_back_to_the_default(world, as_user, usage):
    response = as_user(world.member).get("/portal/usage", {"days": "lots"})
    assert response.status_code == HTTPStatus.OK
    assert response.context["days"] == 14
