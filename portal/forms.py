"""The portal's forms: what a person may type, checked before any service is asked."""

from __future__ import annotations

from django import forms
from django.core.validators import MaxValueValidator

from accounts.models import Membership
from accounts.self_service import LIMIT_FIELDS

# The columns' ranges (PostgreSQL's integer and bigint): larger is a form error, not a 500.
INT_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1


class NewKeyForm(forms.Form):
    team = forms.IntegerField(widget=forms.HiddenInput, min_value=1, max_value=BIGINT_MAX)
    name = forms.CharField(max_length=100)
    allowed_models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every model the team may use.",
    )
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, help_text="Empty: never (if the team allows)."
    )

    def __init__(self, *args, model_names: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = [(name, name) for name in model_names]  # type: ignore[attr-defined]


class RotateKeyForm(forms.Form):
    overlap_hours = forms.IntegerField(min_value=0, max_value=INT_MAX, initial=24)

    def __init__(self, *args, max_overlap_hours: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["overlap_hours"]
        field.validators.append(MaxValueValidator(max_overlap_hours))
        field.widget.attrs["max"] = max_overlap_hours
        field.help_text = f"0 to {max_overlap_hours}: how long the old key keeps working."


class LimitsForm(forms.Form):
    requests_per_minute = forms.IntegerField(required=False, min_value=0, max_value=INT_MAX)
    tokens_per_minute = forms.IntegerField(required=False, min_value=0, max_value=INT_MAX)
    concurrent_requests = forms.IntegerField(required=False, min_value=0, max_value=INT_MAX)
    tokens_per_day = forms.IntegerField(required=False, min_value=0, max_value=BIGINT_MAX)
    tokens_per_month = forms.IntegerField(required=False, min_value=0, max_value=BIGINT_MAX)

    def limits(self) -> dict[str, int | None]:
        return {field: self.cleaned_data.get(field) for field in LIMIT_FIELDS}


class TeamLimitsForm(LimitsForm):
    allowed_models = forms.CharField(
        required=False,
        max_length=4000,
        help_text="Comma-separated model names; empty allows every model.",
    )
    max_key_days = forms.IntegerField(required=False, min_value=1, max_value=36500)

    def model_list(self) -> list[str]:
        raw = self.cleaned_data.get("allowed_models") or ""
        return [name.strip() for name in raw.split(",") if name.strip()]


class AddMemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)
