"""What a request's price depends on beyond its tokens (issue 13): speed, service tier, web
searches, and the web search part of the cost.

Plain ``ADD COLUMN ... DEFAULT`` on both databases, not Django's AddField: on SQLite that
would copy the whole log into a new table (and drop the trigger that refuses UPDATE), and
the defaults stay in the database so that a process of the previous release still appends
during an upgrade. Existing rows get the defaults, which price as they always did.
"""

from django.db import migrations, models

COLUMNS = (
    ("speed", "varchar(32) NOT NULL DEFAULT ''", models.CharField(max_length=32, blank=True, default="")),
    ("service_tier", "varchar(32) NOT NULL DEFAULT ''", models.CharField(max_length=32, blank=True, default="")),
    ("web_search_requests", "bigint NOT NULL DEFAULT 0", models.PositiveBigIntegerField(default=0)),
    ("web_search_cost_nanos", "bigint NOT NULL DEFAULT 0", models.BigIntegerField(default=0)),
)


class Migration(migrations.Migration):
    dependencies = [("usage", "0005_log_identity")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"ALTER TABLE usage_event ADD COLUMN {name} {definition}",
                    f"ALTER TABLE usage_event DROP COLUMN {name}",
                )
                for name, definition, _ in COLUMNS
            ],
            state_operations=[
                migrations.AddField(model_name="loggedevent", name=name, field=field)
                for name, _, field in COLUMNS
            ],
        )
    ]
