"""
Teams and their API keys.

A key is `llm_<prefix>_<secret>`. The prefix is stored as is (shown in the admin, searched,
written in the usage ledger); of the secret only an HMAC-SHA256 with a server-side pepper is
stored, so a copy of the database does not hold usable keys. The full key is shown once, when
it is created.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from limits.quotas import Limits


class LimitFields(models.Model):
    """The five quotas; empty means unlimited."""

    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    concurrent_requests = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        abstract = True

    def limits(self) -> Limits:
        return Limits(
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            concurrent_requests=self.concurrent_requests,
            tokens_per_day=self.tokens_per_day,
            tokens_per_month=self.tokens_per_month,
        )


class Team(LimitFields):
    """
    A group of people sharing keys. Its limits bound the team as a whole: the sum over all
    its keys (each key may have tighter limits of its own).
    """

    name = models.CharField(max_length=100, unique=True)
    members: models.ManyToManyField = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="teams", through="Membership"
    )
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        help_text="Catalog model names or aliases the team's keys may use; empty allows every model.",
    )
    max_key_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Longest lifetime, in days, of a key created in the portal; empty: no limit.",
    )
    weight = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0.01), MaxValueValidator(1000.0)],
        help_text=(
            "The team's share of a busy model: with weights 3 and 1, two teams that both keep "
            "a model busy get 3/4 and 1/4 of its answers. Unused share goes to whoever waits."
        ),
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """
    A person in a team, with a role: team admins manage the team's members, keys and per-key
    limits; members manage their own keys. Rows from the identity provider's groups are kept
    in step with them at each sign-in; rows added by hand are left alone.
    """

    class Role(models.TextChoices):
        ADMIN = "admin", "Team admin"
        MEMBER = "member", "Member"

    class Source(models.TextChoices):
        MANUAL = "manual", "Added by hand"
        IDENTITY_PROVIDER = "identity_provider", "Identity provider group"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    source = models.CharField(max_length=24, choices=Source.choices, default=Source.MANUAL)

    class Meta:
        # The table Django created for Team.members before roles existed.
        db_table = "accounts_team_members"
        unique_together = [("team", "user")]
        ordering = ["team__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class ApiKey(LimitFields):
    class Priority(models.TextChoices):
        INTERACTIVE = "interactive"
        BATCH = "batch"

    name = models.CharField(max_length=100)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="api_keys")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        help_text="Catalog model names or aliases this key may use; empty allows every model.",
    )
    priority = models.CharField(
        max_length=16,
        choices=Priority.choices,
        default=Priority.INTERACTIVE,
        help_text=(
            "Batch requests get a busy model's slots only when no interactive request waits "
            "(and one slot in 11 while they wait, so they are never starved). A request may "
            "lower its own priority with X-LLMAPI-Priority: batch, never raise it."
        ),
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The key this one replaced (a rotation); the old one keeps working until its expiry.
    replaces = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, editable=False, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (llm_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > timezone.now())


class ExternalIdentity(models.Model):
    """
    The identity provider's account behind a local one: its issuer and subject (`sub`), which
    never change, unlike a user name or an e-mail address.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="external_identity"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_login_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The groups claim at the last sign-in, as the identity provider sent it.
    groups = models.JSONField(default=list, blank=True, editable=False)

    class Meta:
        unique_together = [("issuer", "subject")]
        verbose_name = "single sign-on identity"
        verbose_name_plural = "single sign-on identities"

    def __str__(self) -> str:
        return f"{self.user} ({self.subject} at {self.issuer})"
