"""People in every role, their teams and keys, and a signed-in client for each."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client

from accounts import services
from accounts.models import ApiKey, Membership, Team
from tests.teams import key_pepper  # noqa: F401


@dataclass
class World:
    ml: Team
    other: Team
    operator: object
    team_admin: object
    member: object
    colleague: object
    outsider: object
    member_key: ApiKey
    colleague_key: ApiKey
    other_key: ApiKey
    colleague_membership: Membership
    member_membership: Membership


@pytest.fixture
def world(db, django_user_model) -> World:
    users = django_user_model.objects
    ml = Team.objects.create(name="ml", requests_per_minute=100, tokens_per_day=1_000_000)
    other = Team.objects.create(name="other")
    operator = users.create_user("olga", is_staff=True)
    team_admin = users.create_user("ada")
    member = users.create_user("max")
    colleague = users.create_user("cleo")
    outsider = users.create_user("otto")
    Membership.objects.create(team=ml, user=team_admin, role=Membership.Role.ADMIN)
    member_membership = Membership.objects.create(team=ml, user=member)
    colleague_membership = Membership.objects.create(team=ml, user=colleague)
    Membership.objects.create(team=other, user=outsider, role=Membership.Role.ADMIN)

    def key(team, owner, name):
        return services.create_api_key(name=name, team=team, created_by=owner).api_key

    return World(
        ml=ml,
        other=other,
        operator=operator,
        team_admin=team_admin,
        member=member,
        colleague=colleague,
        outsider=outsider,
        member_key=key(ml, member, "max-laptop"),
        colleague_key=key(ml, colleague, "cleo-laptop"),
        other_key=key(other, outsider, "otto-ci"),
        colleague_membership=colleague_membership,
        member_membership=member_membership,
    )


@pytest.fixture
def as_user():
    def signed_in(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return signed_in
