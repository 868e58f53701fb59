"""The log's identity (``LogIdentity``): one row, made here with the database."""

import uuid

from django.db import migrations, models


def create_identity(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("usage", "LogIdentity").objects.get_or_create(
        id=1, defaults={"value": uuid.uuid4().hex}
    )


class Migration(migrations.Migration):
    dependencies = [("usage", "0004_event_user_without_constraint")]

    operations = [
        migrations.CreateModel(
            name="LogIdentity",
            fields=[
                (
                    "id",
                    models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False),
                ),
                ("value", models.CharField(max_length=32)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"db_table": "usage_log_identity"},
        ),
        migrations.RunPython(create_identity, migrations.RunPython.noop),
    ]
