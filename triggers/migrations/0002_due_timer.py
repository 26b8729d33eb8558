# The due index of the database backend (triggers/timer_models.py).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("triggers", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="DueTimer",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("uid", models.CharField(max_length=250)),
                ("timer_id", models.CharField(max_length=250)),
                ("due", models.DateTimeField(db_index=True)),
                ("locator", models.JSONField(default=dict)),
            ],
            options={
                "db_table": "triggers_due_timer",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("uid", "timer_id"), name="triggers_due_timer_unique"
                    )
                ],
            },
        ),
    ]
