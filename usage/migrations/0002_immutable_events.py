"""The log is append-only: the database itself refuses to UPDATE an event."""

from django.db import migrations


def create_trigger(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            """
            CREATE OR REPLACE FUNCTION usage_event_refuse_update() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'usage events are immutable'; END; $$ LANGUAGE plpgsql;
            CREATE TRIGGER usage_event_no_update BEFORE UPDATE ON usage_event
            FOR EACH ROW EXECUTE FUNCTION usage_event_refuse_update();
            """
        )
    elif schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(
            "CREATE TRIGGER usage_event_no_update BEFORE UPDATE ON usage_event "
            "BEGIN SELECT RAISE(ABORT, 'usage events are immutable'); END;"
        )


def drop_trigger(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP TRIGGER IF EXISTS usage_event_no_update ON usage_event")
        schema_editor.execute("DROP FUNCTION IF EXISTS usage_event_refuse_update()")
    elif schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS usage_event_no_update")


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]
    operations = [migrations.RunPython(create_trigger, drop_trigger)]
