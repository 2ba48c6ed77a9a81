"""Who is calling: what authentication hands to the views, the quotas and the ledger."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from limits.quotas import QuotaSubject


@dataclass(frozen=True, slots=True)
class Principal:
    """
    An accepted caller. `kind` is "key" (a key from the database), "bootstrap" (the
    operator's API_KEY from the environment: no quotas, every model) or "staff" (an admin
    user's session, for the browsable API).
    """

    kind: str
    key_id: int | None
    prefix: str
    name: str
    team_id: int | None
    team_name: str
    allowed_models: frozenset[str]
    expires_at: float | None  # Unix time
    quota: QuotaSubject
    is_authenticated: bool = True
    team_weight: float = 1.0  # the team's share of a busy model (`limits.flows`)
    priority: str = "interactive"  # the key's priority class: "interactive" or "batch"
    # The team's own model list: it bounds every key of the team (empty: no bound).
    team_models: frozenset[str] = frozenset()

    def may_use(self, *model_names: str) -> bool:
        """Whether this caller may use a model known by any of these names (name, aliases)."""
        if self.team_models and not any(n in self.team_models for n in model_names):
            return False
        return not self.allowed_models or any(n in self.allowed_models for n in model_names)

    def __str__(self) -> str:
        return self.name


@functools.lru_cache(maxsize=64)  # one per configured key, built once
def bootstrap_principal(index: int) -> Principal:
    return Principal(
        kind="bootstrap",
        key_id=None,
        prefix="",
        name=f"API key #{index + 1}",
        team_id=None,
        team_name="",
        allowed_models=frozenset(),
        expires_at=None,
        quota=QuotaSubject(key_id=f"env{index}"),
    )


def staff_principal(user) -> Principal:
    return Principal(
        kind="staff",
        key_id=None,
        prefix="",
        name=user.get_username(),
        team_id=None,
        team_name="",
        allowed_models=frozenset(),
        expires_at=None,
        quota=QuotaSubject(key_id=f"staff{user.pk}"),
    )
