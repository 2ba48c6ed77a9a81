import asyncio
import datetime as dt
import time

import pytest
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.test import APIRequestFactory

from accounts import selectors, services
from accounts.authentication import (
    INVALID_KEY_DETAIL,
    MISSING_KEY_DETAIL,
    ApiKeyAuthentication,
    BearerOrApiKeyAuthentication,
    KeyCacheNotPrepared,
    prepare_authentication,
)
from accounts.models import ApiKey
from tests.waiting import FakeClock

factory = APIRequestFactory()
BOOTSTRAP = "operator-bootstrap-key"


@pytest.fixture(autouse=True)
def environment_key(settings):
    settings.API_KEYS = [BOOTSTRAP, "rotated-bootstrap-key"]


def authenticate(auth_class=ApiKeyAuthentication, **headers):
    return auth_class().authenticate(factory.get("/", headers=headers))


def test_missing_key_returns_401_detail_of_the_seed():
    with pytest.raises(exceptions.NotAuthenticated) as caught:
        authenticate()
    assert caught.value.detail == MISSING_KEY_DETAIL


@pytest.mark.django_db
@pytest.mark.parametrize("candidate", ["wrong", "llm_abcdefgh_nope", "llm_x"])
def test_wrong_key_returns_403_detail_of_the_seed(candidate):
    with pytest.raises(exceptions.PermissionDenied) as caught:
        authenticate(**{"X-API-Key": candidate})
    assert caught.value.detail == INVALID_KEY_DETAIL


@pytest.mark.parametrize(("key", "index"), [(BOOTSTRAP, 0), ("rotated-bootstrap-key", 1)])
def test_environment_keys_are_unlimited_bootstrap_keys(key, index):
    principal, _ = authenticate(**{"X-API-Key": key})
    assert principal.kind == "bootstrap"
    assert principal.quota.unlimited and principal.may_use("any-model")
    assert principal.quota.key_id == f"env{index}"


@pytest.mark.django_db
def test_key_life_cycle_create_use_expire_revoke(make_key):
    created = make_key(name="ci", allowed_models=["small"], requests_per_minute=5)
    principal, _ = authenticate(**{"X-API-Key": created.full_key})
    assert (principal.kind, principal.name, principal.team_name) == ("key", "ci", "research")
    assert principal.may_use("small") and not principal.may_use("large")
    assert principal.quota.key_limits.requests_per_minute == 5
    # Expired: refused from the next request on, even from the cache.
    ApiKey.objects.filter(pk=created.api_key.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    selectors.forget_all()
    with pytest.raises(exceptions.PermissionDenied):
        authenticate(**{"X-API-Key": created.full_key})
    # Revoked (a fresh key): refused at once in this worker.
    other = make_key(name="other")
    authenticate(**{"X-API-Key": other.full_key})
    services.revoke_api_key(prefix=other.api_key.prefix)
    with pytest.raises(exceptions.PermissionDenied) as caught:
        authenticate(**{"X-API-Key": other.full_key})
    assert caught.value.detail == INVALID_KEY_DETAIL


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The key cache's clocks, standing still from now until the test moves them."""
    fake = FakeClock(start=time.time())
    monkeypatch.setattr(selectors, "time", fake)
    return fake


@pytest.mark.django_db
@pytest.mark.fake_clock
def test_cached_key_expires_at_its_expiry_time_without_a_lookup(
    make_key, settings, clock, django_assert_num_queries
):
    settings.API_KEYS_CACHE_SECONDS = 3600
    created = make_key(expires_at=timezone.now() + dt.timedelta(seconds=60))
    authenticate(**{"X-API-Key": created.full_key})
    clock.advance(59.9)
    with django_assert_num_queries(0):
        authenticate(**{"X-API-Key": created.full_key})
    clock.advance(0.2)
    with django_assert_num_queries(0), pytest.raises(exceptions.PermissionDenied):
        authenticate(**{"X-API-Key": created.full_key})


@pytest.mark.django_db
@pytest.mark.fake_clock
def test_revocation_elsewhere_takes_effect_after_the_cache_period(make_key, settings, clock):
    """Another worker revoked the key: this one's cache is not told, its entry ages out."""
    settings.API_KEYS_CACHE_SECONDS = 5
    created = make_key()
    authenticate(**{"X-API-Key": created.full_key})
    ApiKey.objects.filter(pk=created.api_key.pk).update(revoked=True)  # no signal: elsewhere
    clock.advance(5)
    authenticate(**{"X-API-Key": created.full_key})  # still cached, as the period allows
    clock.advance(0.001)
    with pytest.raises(exceptions.PermissionDenied):
        authenticate(**{"X-API-Key": created.full_key})


@pytest.mark.django_db
def test_a_key_with_a_right_prefix_and_wrong_secret_is_refused(make_key):
    created = make_key()
    forged = f"llm_{created.api_key.prefix}_{'x' * 43}"
    with pytest.raises(exceptions.PermissionDenied):
        authenticate(**{"X-API-Key": forged})


@pytest.mark.django_db
def test_bearer_token_is_accepted_and_a_wrong_one_is_401(make_key):
    created = make_key()
    principal, _ = authenticate(
        BearerOrApiKeyAuthentication, Authorization=f"Bearer {created.full_key}"
    )
    assert principal.kind == "key"
    with pytest.raises(exceptions.AuthenticationFailed):
        authenticate(BearerOrApiKeyAuthentication, Authorization="Bearer llm_abcdefgh_wrong")


@pytest.mark.django_db(transaction=True)
async def test_on_the_event_loop_the_cache_is_prepared_first(make_key):
    created = await asyncio.to_thread(make_key)
    request = factory.get("/", headers={"X-API-Key": created.full_key})
    with pytest.raises(KeyCacheNotPrepared):
        ApiKeyAuthentication().authenticate(request)
    await prepare_authentication(request)
    principal, _ = ApiKeyAuthentication().authenticate(request)
    assert principal.kind == "key"


@pytest.mark.django_db
def test_last_used_is_collected_on_the_request_path_and_written_later(make_key):
    created = make_key()
    authenticate(**{"X-API-Key": created.full_key})
    authenticate(**{"X-API-Key": created.full_key})
    assert ApiKey.objects.get(pk=created.api_key.pk).last_used_at is None
    assert services.flush_last_used() == 1
    assert ApiKey.objects.get(pk=created.api_key.pk).last_used_at is not None
    assert services.flush_last_used() == 0


@pytest.mark.django_db
def test_a_key_limited_to_some_models_is_refused_the_others(make_key):
    from accounts.authentication import check_model_allowed

    principal, _ = authenticate(**{"X-API-Key": make_key(allowed_models=["fast"]).full_key})
    check_model_allowed(principal, "qwen2.5-7b", "fast")  # allowed by its alias
    with pytest.raises(exceptions.PermissionDenied) as caught:
        check_model_allowed(principal, "large-model")
    assert "large-model" in caught.value.detail
    bootstrap, _ = authenticate(**{"X-API-Key": BOOTSTRAP})
    check_model_allowed(bootstrap, "large-model")


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_key_store_is_a_503_not_a_500(make_key):
    from django.db import connection

    from accounts.authentication import KeyStoreUnavailable

    created = make_key()
    with connection.cursor() as cursor:  # the table is gone for a moment: lookups fail
        cursor.execute("ALTER TABLE accounts_apikey RENAME TO accounts_away")
    try:
        with pytest.raises(KeyStoreUnavailable) as caught:
            authenticate(**{"X-API-Key": created.full_key})
        assert caught.value.status_code == 503
        # The operator's key does not need the database.
        assert authenticate(**{"X-API-Key": BOOTSTRAP})[0].kind == "bootstrap"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE accounts_away RENAME TO accounts_apikey")
