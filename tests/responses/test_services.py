from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.principals import bootstrap_principal
from responses import selectors, services
from responses.models import StoredResponse

pytestmark = pytest.mark.django_db(transaction=True)


def row(response_id: str, owner: str, *, age_days: float = 0, expired: bool = False):
    created = timezone.now() - timedelta(days=age_days)
    expires = timezone.now() - timedelta(seconds=1) if expired else created + timedelta(days=30)
    return StoredResponse(
        id=response_id,
        owner=owner,
        created_at=created,
        expires_at=expires,
        model="m",
        status="completed",
        response={"id": response_id, "output": []},
    )


def test_an_expired_response_is_invisible_and_deleted_when_another_is_stored():
    principal = bootstrap_principal(0)
    owner = selectors.owner_of(principal)
    row("resp_old", owner, expired=True).save()
    assert selectors.get_response("resp_old", principal) is None
    services._save.__wrapped__(row("resp_new", owner))
    assert list(StoredResponse.objects.values_list("pk", flat=True)) == ["resp_new"]


def test_a_keys_oldest_responses_go_beyond_its_maximum(settings):
    settings.RESPONSES_MAX_PER_KEY = 2
    owner = selectors.owner_of(bootstrap_principal(0))
    other = selectors.owner_of(bootstrap_principal(1))
    services._save.__wrapped__(row("resp_other", other, age_days=9))
    for number, age in enumerate((3, 2, 1)):
        services._save.__wrapped__(row(f"resp_{number}", owner, age_days=age))
    kept = set(StoredResponse.objects.values_list("pk", flat=True))
    assert kept == {"resp_1", "resp_2", "resp_other"}


def test_the_same_id_twice_keeps_the_first():
    owner = selectors.owner_of(bootstrap_principal(0))
    assert services._save.__wrapped__(row("resp_x", owner)) is True
    assert services._save.__wrapped__(row("resp_x", "someone:else")) is False
    assert StoredResponse.objects.get(pk="resp_x").owner == owner


def test_another_key_does_not_see_a_response():
    mine, theirs = bootstrap_principal(0), bootstrap_principal(1)
    row("resp_a", selectors.owner_of(mine)).save()
    assert selectors.get_response("resp_a", mine) is not None
    assert selectors.get_response("resp_a", theirs) is None
    assert selectors.get_response("x" * 500, mine) is None
