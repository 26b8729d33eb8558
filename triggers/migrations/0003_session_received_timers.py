# What instances received, pending timers and idempotency keys: rows of their own.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("triggers", "0002_due_timer"),
    ]

    operations = [
        migrations.CreateModel(
            name="IdempotencyKey",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("key", models.CharField(max_length=250)),
                ("expires", models.FloatField()),
                (
                    "session",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="idempotency_rows",
                        to="triggers.session",
                    ),
                ),
            ],
            options={
                "db_table": "triggers_idempotency",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("session", "key"), name="triggers_idempotency_unique"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ReceivedKwargs",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("instance", models.CharField(max_length=221)),
                ("field", models.CharField(max_length=201)),
                ("kwargs", models.JSONField(null=True)),
                (
                    "session",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="received_rows",
                        to="triggers.session",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "received kwargs",
                "db_table": "triggers_received",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("session", "instance", "field"), name="triggers_received_unique"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SessionTimer",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("timer_id", models.CharField(max_length=250)),
                ("timer", models.JSONField()),
                (
                    "session",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="timer_rows",
                        to="triggers.session",
                    ),
                ),
            ],
            options={
                "db_table": "triggers_timer",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("session", "timer_id"), name="triggers_timer_unique"
                    )
                ],
            },
        ),
    ]
