"""A team's model list bounds every key of the team, whatever the key's own list says."""

import pytest

from accounts import selectors

pytestmark = pytest.mark.django_db


def test_the_teams_models_bound_a_key_without_a_list(team, make_key):
    team.allowed_models = ["small"]
    team.save()
    principal = selectors.load_principal(make_key().full_key)
    assert principal.may_use("small")
    assert not principal.may_use("large")


def test_a_key_may_use_only_models_in_both_lists(team, make_key):
    team.allowed_models = ["small", "medium"]
    team.save()
    principal = selectors.load_principal(make_key(allowed_models=["medium", "large"]).full_key)
    assert principal.may_use("medium")
    assert not principal.may_use("small") and not principal.may_use("large")


def test_a_team_without_a_list_leaves_the_keys_list(team, make_key):
    principal = selectors.load_principal(make_key(allowed_models=["large"]).full_key)
    assert principal.may_use("large") and not principal.may_use("small")
    assert selectors.load_principal(make_key().full_key).may_use("anything")
