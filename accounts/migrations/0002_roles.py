import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Team.members gets a model of its own (a role per person) on the table it already has.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Membership",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "team",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="memberships",
                                to="accounts.team",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="memberships",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "accounts_team_members",
                        "ordering": ["team__name", "user__username"],
                        "unique_together": {("team", "user")},
                    },
                ),
                migrations.AlterField(
                    model_name="team",
                    name="members",
                    field=models.ManyToManyField(
                        blank=True,
                        related_name="teams",
                        through="accounts.Membership",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[],
        ),
        migrations.AddField(
            model_name="membership",
            name="role",
            field=models.CharField(
                choices=[("admin", "Team admin"), ("member", "Member")],
                default="member",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="membership",
            name="source",
            field=models.CharField(
                choices=[
                    ("manual", "Added by hand"),
                    ("identity_provider", "Identity provider group"),
                ],
                default="manual",
                max_length=24,
            ),
        ),
        migrations.AddField(
            model_name="team",
            name="allowed_models",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Catalog model names or aliases the team's keys may use; empty allows every model.",
            ),
        ),
        migrations.AddField(
            model_name="team",
            name="max_key_days",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Longest lifetime, in days, of a key created in the portal; empty: no limit.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="replaces",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="accounts.apikey",
            ),
        ),
        migrations.CreateModel(
            name="ExternalIdentity",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("issuer", models.CharField(max_length=255)),
                ("subject", models.CharField(max_length=255)),
                (
                    "created_at",
                    models.DateTimeField(default=django.utils.timezone.now, editable=False),
                ),
                ("last_login_at", models.DateTimeField(blank=True, editable=False, null=True)),
                ("groups", models.JSONField(blank=True, default=list, editable=False)),
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="external_identity",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "single sign-on identity",
                "verbose_name_plural": "single sign-on identities",
                "unique_together": {("issuer", "subject")},
            },
        ),
    ]
