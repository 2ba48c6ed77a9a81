"""Hostile or broken form input gets a 4xx naming the field, never a 500 or a change."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("team", ["", "abc", "-1", "9" * 40, "1.5"])
def test_a_bad_team_field_is_a_400_naming_it(world, as_user, team):
    response = as_user(world.member).post("/portal/keys/new", {"team": team, "name": "x"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert b"team:" in response.content
    assert not ApiKey.objects.filter(name="x").exists()


def test_an_unknown_team_is_a_404(world, as_user):
    response = as_user(world.member).post("/portal/keys/new", {"team": "999999", "name": "x"})
    assert response.status_code == HTTPStatus.NOT_FOUND


@pytest.mark.parametrize("path", ["/portal/keys/{}/limits", "/portal/teams/{}"])
def test_huge_ids_in_the_path_are_a_404(world, as_user, path):
    response = as_user(world.operator).get(path.format("9" * 40))
    assert response.status_code == HTTPStatus.NOT_FOUND


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requests_per_minute", str(2**31)),
        ("tokens_per_day", str(2**63)),
        ("tokens_per_minute", "-1"),
    ],
)
def test_out_of_range_limits_are_a_400_naming_the_field(world, as_user, field, value):
    response = as_user(world.operator).post(
        f"/portal/keys/{world.member_key.pk}/limits", {field: value}
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert f'name="{field}"'.encode() in response.content
    assert b"errorlist" in response.content


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"name": "x" * 101, "expires_in_days": "1"}, b"name"),
        ({"name": "x", "expires_in_days": "99999"}, b"expires_in_days"),
        ({"name": "x", "allowed_models": "not-a-model"}, b"allowed_models"),
    ],
)
def test_a_bad_key_form_is_a_400_naming_the_field(world, as_user, data, named):
    response = as_user(world.member).post("/portal/keys/new", {"team": world.ml.pk, **data})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert named in response.content
    assert ApiKey.objects.count() == 3


@pytest.mark.parametrize("hours", ["-1", "abc", str(2**40)])
def test_a_bad_rotation_overlap_is_a_400(world, as_user, hours):
    response = as_user(world.member).post(
        f"/portal/keys/{world.member_key.pk}/rotate", {"overlap_hours": hours}
    )
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert b"Overlap hours" in response.content
    assert ApiKey.objects.count() == 3
