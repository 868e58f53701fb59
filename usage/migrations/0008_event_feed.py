"""Agent-free ingest (issue 16): which feed a record came from, the cost Claude Code reported
for it (OpenTelemetry's ``cost_usd``, kept beside ours), and an index to find a request's
copies by its request id (a copy from the other feed has another message id).

Plain ``ADD COLUMN ... DEFAULT`` as in 0006 (no table copy on SQLite, the UPDATE trigger
kept, and a process of the previous release still appends during an upgrade). The index is
partial: lines without a request id (older Claude Code) are never looked up by it.
"""

from django.db import migrations, models

COLUMNS = (
    ("feed", "varchar(16) NOT NULL DEFAULT ''", models.CharField(max_length=16, blank=True, default="")),
    ("reported_cost_nanos", "bigint NULL", models.BigIntegerField(null=True)),
)


class Migration(migrations.Migration):
    dependencies = [("usage", "0007_event_user_occurred_at")]

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
        ),
        migrations.AddIndex(
            model_name="loggedevent",
            index=models.Index(
                fields=["user", "request_id"],
                name="usage_event_user_request",
                condition=~models.Q(request_id=""),
            ),
        ),
    ]
