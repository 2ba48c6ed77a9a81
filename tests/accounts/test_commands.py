import io

import pytest
from django.core.management import CommandError, call_command

from accounts.authentication import resolve_key
from accounts.models import ApiKey


@pytest.mark.django_db
def test_create_then_revoke_from_the_command_line():
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_key",
        "--team=ops",
        "--name=batch",
        "--models=small",
        "--requests-per-minute=10",
        "--expires-in-days=30",
        stdout=out,
        stderr=err,
    )
    full_key = out.getvalue().strip()
    assert "not be shown again" in err.getvalue()
    principal = resolve_key(full_key)
    assert principal is not None and principal.team_name == "ops"
    assert principal.quota.key_limits.requests_per_minute == 10
    api_key = ApiKey.objects.get(name="batch")
    assert api_key.expires_at is not None and api_key.allowed_models == ["small"]

    call_command("revoke_api_key", full_key[:13], stdout=io.StringIO())
    assert ApiKey.objects.get(name="batch").revoked
    assert resolve_key(full_key) is None


@pytest.mark.django_db
def test_revoking_an_unknown_prefix_is_an_error():
    with pytest.raises(CommandError, match="No API key"):
        call_command("revoke_api_key", "llm_zzzzzzzz")


@pytest.mark.django_db
def test_team_weight_and_key_priority_reach_the_caller():
    out = io.StringIO()
    call_command(
        "create_api_key",
        "--team=research",
        "--name=nightly",
        "--team-weight=3",
        "--priority=batch",
        stdout=out,
        stderr=io.StringIO(),
    )
    principal = resolve_key(out.getvalue().strip())
    assert principal is not None
    assert (principal.team_weight, principal.priority) == (3.0, "batch")
    # A key made later without the option leaves the team's weight alone.
    call_command("create_api_key", "--team=research", "--name=ci", stdout=out, stderr=io.StringIO())
    assert ApiKey.objects.get(name="ci").team.weight == 3.0
    assert ApiKey.objects.get(name="ci").priority == "interactive"


@pytest.mark.django_db
def test_team_weight_out_of_range_is_refused():
    with pytest.raises(CommandError, match="--team-weight"):
        call_command("create_api_key", "--team=t", "--name=n", "--team-weight=0")
