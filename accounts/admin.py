"""Teams and keys in the Django admin. A new key's full text is shown once, in a message."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts import services
from accounts.models import ApiKey, ExternalIdentity, Membership, Team
from audit.model_admin import AuditedModelAdmin
from audit.services import Actor

LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent_requests",
    "tokens_per_day",
    "tokens_per_month",
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ("user",)
    fields = ("user", "role", "source")
    readonly_fields = ("source",)


class TeamForm(forms.ModelForm):
    allowed_models = forms.CharField(
        required=False,
        help_text="Comma-separated catalog model names or aliases; empty allows every model.",
    )

    class Meta:
        model = Team
        fields = ("name", "allowed_models", "max_key_days", "weight", *LIMIT_FIELDS)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["allowed_models"] = ", ".join(self.instance.allowed_models or [])
        self.fields["weight"].required = False  # left out: 1

    def clean_allowed_models(self) -> list[str]:
        raw = self.cleaned_data.get("allowed_models") or ""
        return [name.strip() for name in raw.split(",") if name.strip()]

    def clean_weight(self) -> float:
        weight = self.cleaned_data.get("weight")
        return 1.0 if weight is None else weight


@admin.register(Team)
class TeamAdmin(AuditedModelAdmin):
    form = TeamForm
    list_display = (
        "name",
        "weight",
        "requests_per_minute",
        "tokens_per_minute",
        "tokens_per_day",
        "created_at",
    )
    search_fields = ("name",)
    inlines = (MembershipInline,)
    fieldsets = (
        (None, {"fields": ("name", "allowed_models", "max_key_days")}),
        ("Share of a busy model", {"fields": ("weight",)}),
        ("Limits of the whole team (empty: unlimited)", {"fields": LIMIT_FIELDS}),
    )

    def audit_team_name(self, obj) -> str:
        return obj.name if isinstance(obj, Team) else super().audit_team_name(obj)


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(admin.ModelAdmin):
    list_display = ("user", "subject", "issuer", "last_login_at")
    search_fields = ("user__username", "subject")
    readonly_fields = ("user", "issuer", "subject", "groups", "created_at", "last_login_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ApiKeyForm(forms.ModelForm):
    allowed_models = forms.CharField(
        required=False,
        help_text="Comma-separated catalog model names or aliases; empty allows every model.",
    )

    class Meta:
        model = ApiKey
        fields = (
            "name",
            "team",
            "allowed_models",
            "priority",
            "expires_at",
            "revoked",
            *LIMIT_FIELDS,
        )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["allowed_models"] = ", ".join(self.instance.allowed_models or [])
        self.fields["priority"].required = False  # left out: interactive

    def clean_priority(self) -> str:
        return self.cleaned_data.get("priority") or ApiKey.Priority.INTERACTIVE

    def clean_allowed_models(self) -> list[str]:
        raw = self.cleaned_data.get("allowed_models") or ""
        return [name.strip() for name in raw.split(",") if name.strip()]


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedModelAdmin):
    form = ApiKeyForm
    audit_object_type = "key"
    list_display = (
        "name",
        "display_prefix",
        "team",
        "priority",
        "is_active",
        "expires_at",
        "last_used_at",
    )
    list_filter = ("revoked", "team")
    search_fields = ("name", "prefix", "team__name")
    readonly_fields = ("display_prefix", "created_at", "created_by", "last_used_at", "revoked_at")
    actions = ("revoke_selected",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "team",
                    "display_prefix",
                    "allowed_models",
                    "priority",
                    "expires_at",
                )
            },
        ),
        (
            "State",
            {"fields": ("revoked", "revoked_at", "created_at", "created_by", "last_used_at")},
        ),
        (
            "Limits of this key (empty: unlimited; the team's limits apply too)",
            {"fields": LIMIT_FIELDS},
        ),
    )

    @admin.display(description="Key", ordering="prefix")
    def display_prefix(self, obj: ApiKey) -> str:
        return f"llm_{obj.prefix}_…" if obj.prefix else "(generated on save)"

    @admin.display(boolean=True, description="Active")
    def is_active(self, obj: ApiKey) -> bool:
        return obj.is_active

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        full_key = None
        if not change:
            full_key = services.assign_new_secret(obj)
            obj.created_by = request.user
        if obj.revoked and obj.revoked_at is None:
            obj.revoked_at = timezone.now()
        super().save_model(request, obj, form, change)
        if full_key:
            request.new_api_key = full_key

    def response_add(self, request, obj: ApiKey, post_url_continue=None):
        """
        Show the new key on the answer to the form itself: a message would keep it in a
        cookie or the session until the next page.
        """
        full_key = getattr(request, "new_api_key", None)
        if full_key is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": "New API key",
            "opts": self.model._meta,
            "api_key": obj,
            "full_key": full_key,
        }
        response = TemplateResponse(request, "accounts/key_created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected keys")
    def revoke_selected(self, request, queryset) -> None:
        for api_key in queryset.filter(revoked=False):
            services.revoke_api_key(prefix=api_key.prefix, actor=Actor.from_request(request))
        self.message_user(request, "Revoked.", messages.SUCCESS)
