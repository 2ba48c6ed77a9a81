"""
`AuditedModelAdmin`: every add, change and delete made in the admin (inline rows included)
is written to the audit log with before and after, as the signed-in operator.
"""

from __future__ import annotations

from django.contrib import admin

from audit.services import Actor, record
from audit.snapshots import snapshot


class AuditedModelAdmin(admin.ModelAdmin):
    # "<audit_object_type>.create" / ".change" / ".delete"; empty: the model's name.
    audit_object_type = ""

    def audit_team_name(self, obj) -> str:
        """The team an object belongs to, for the log's team column."""
        team = getattr(obj, "team", None)
        return str(team) if team is not None else ""

    def audit_snapshot(self, obj) -> dict:
        return snapshot(obj)

    def _object_type(self, obj) -> str:
        return self.audit_object_type or obj._meta.model_name

    def save_model(self, request, obj, form, change: bool) -> None:
        before = None
        if change and obj.pk is not None:
            stored = type(obj)._default_manager.filter(pk=obj.pk).first()
            before = self.audit_snapshot(stored) if stored is not None else None
        super().save_model(request, obj, form, change)
        record(
            actor=Actor.from_request(request),
            action=f"{self._object_type(obj)}.{'change' if change else 'create'}",
            target=obj,
            team_name=self.audit_team_name(obj),
            before=before,
            after=self.audit_snapshot(obj),
        )

    def delete_model(self, request, obj) -> None:
        self._record_delete(request, obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for obj in queryset:
            self._record_delete(request, obj)
        super().delete_queryset(request, queryset)

    def _record_delete(self, request, obj) -> None:
        record(
            actor=Actor.from_request(request),
            action=f"{self._object_type(obj)}.delete",
            target=obj,
            team_name=self.audit_team_name(obj),
            before=self.audit_snapshot(obj),
        )

    def save_formset(self, request, form, formset, change: bool) -> None:
        """Inline rows (a team's memberships): each added, changed or deleted row."""
        actor = Actor.from_request(request)
        befores = {}
        for inline_form in formset.initial_forms:
            instance = inline_form.instance
            if instance.pk is not None:
                stored = type(instance)._default_manager.filter(pk=instance.pk).first()
                if stored is not None:
                    befores[instance.pk] = snapshot(stored)
        deleted = [
            (f.instance.pk, f.instance, befores.get(f.instance.pk))
            for f in formset.deleted_forms
            if f.instance.pk is not None
        ]
        super().save_formset(request, form, formset, change)
        team_name = self.audit_team_name(form.instance) or str(form.instance)
        for pk, instance, before in deleted:
            record(
                actor=actor,
                action=f"{instance._meta.model_name}.delete",
                target=instance,
                object_id=str(pk),
                team_name=team_name,
                before=before,
            )
        for instance in formset.new_objects:
            record(
                actor=actor,
                action=f"{instance._meta.model_name}.create",
                target=instance,
                team_name=team_name,
                after=snapshot(instance),
            )
        for instance, _fields in formset.changed_objects:
            record(
                actor=actor,
                action=f"{instance._meta.model_name}.change",
                target=instance,
                team_name=team_name,
                before=befores.get(instance.pk),
                after=snapshot(instance),
            )
