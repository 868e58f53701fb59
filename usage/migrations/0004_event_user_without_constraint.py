"""The log's user column without a database foreign key constraint (see ``LoggedEvent``).

SQLite alters a column by rebuilding the table, which drops its triggers: the trigger that
refuses UPDATE (0002) is created again after the rebuild.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def restore_sqlite_trigger(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(
            "CREATE TRIGGER IF NOT EXISTS usage_event_no_update BEFORE UPDATE ON usage_event "
            "BEGIN SELECT RAISE(ABORT, 'usage events are immutable'); END;"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0003_official_limit"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Rolled back, the rebuild below runs after this: the trigger is restored here then.
        migrations.RunPython(migrations.RunPython.noop, restore_sqlite_trigger),
        migrations.AlterField(
            model_name="loggedevent",
            name="user",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(restore_sqlite_trigger, migrations.RunPython.noop),
    ]
