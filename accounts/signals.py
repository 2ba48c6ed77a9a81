"""A key changed or was deleted: this worker forgets its cached lookup at once."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts import selectors
from accounts.models import ApiKey, Team


@receiver([post_save, post_delete], sender=ApiKey)
def forget_cached_key(sender, instance: ApiKey, **kwargs) -> None:
    selectors.forget_key(instance.prefix)


@receiver([post_save, post_delete], sender=Team)
def forget_cached_team(sender, instance: Team, **kwargs) -> None:
    # A team's limits are copied into its keys' cached entries.
    selectors.forget_all()
