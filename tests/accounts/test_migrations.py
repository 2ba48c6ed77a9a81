"""Team members from before roles existed become members (role "member") of the same teams."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


@pytest.mark.django_db(transaction=True)
def test_existing_members_keep_their_teams_as_members():
    executor = MigrationExecutor(connection)
    executor.migrate([("accounts", "0001_initial")])
    old = executor.loader.project_state([("accounts", "0001_initial")]).apps
    user = old.get_model("auth", "User").objects.create(username="early")
    team = old.get_model("accounts", "Team").objects.create(name="research")
    team.members.add(user)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    from accounts.models import Membership

    membership = Membership.objects.get(team__name="research", user__username="early")
    assert (membership.role, membership.source) == ("member", "manual")
