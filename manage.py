#!/usr/bin/env python
"""Django's command line, with the embedded Redis for the commands that use Redis.

The settings read ``REDIS_URL`` once, as they load; without one, in the local profile, the
commands that use Redis need the embedded server started (or joined) and named in the
environment first (``backend/embedded_redis.py``; the production profile refuses to run
them instead). The others (``migrate``, ``check``, ``create_token``, ...)
start nothing. tests/backend/test_manage.py fails for a command of ours that is in neither
set, so a new command cannot be forgotten.
"""

import os
import sys

COMMANDS_WITH_REDIS = frozenset(
    {
        "load_samples",
        "local_setup",
        "prune_events",
        "rebuild_projections",
        "run_worker",
        "runserver",  # daphne's: it serves
        "shell",
    }
)
COMMANDS_WITHOUT_REDIS = frozenset({"create_token", "rotate_token", "revoke_token"})


def main(argv: list[str]) -> None:
    from backend.embedded_redis import ensure_redis_url, ensure_var_dir

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    ensure_var_dir()  # the default SQLite file's directory, before `migrate` on a fresh clone
    command = argv[1] if len(argv) > 1 else "help"
    if command in COMMANDS_WITH_REDIS:
        ensure_redis_url()
    from django.core.management import execute_from_command_line

    execute_from_command_line(argv)


if __name__ == "__main__":
    main(sys.argv)
