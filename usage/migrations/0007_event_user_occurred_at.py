"""Retention reads one user's expired events at a time (``usage.retention``): an index on
(user, occurred_at, position) finds exactly their positions, from the index alone, whatever
the user's history or the other users'."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("usage", "0006_event_price_inputs")]

    operations = [
        migrations.AddIndex(
            model_name="loggedevent",
            index=models.Index(
                fields=["user", "occurred_at", "position"], name="usage_event_user_occurred"
            ),
        ),
    ]
