"""pytest plugin (``-p tests.embedded_redis_setup`` in pyproject.toml): the test run's Redis
and var directory, ready before pytest-django loads the settings.

The test run is a local install (``USAGE_PROFILE=local``, ``backend/profiles.py``), whatever
the shell says: its settings and every process a test starts inherit the profile; the tests
of the production profile give their processes environments of their own. The settings read
``REDIS_URL`` once and start nothing themselves; without one, the test run starts (or joins)
the embedded server here, and every child process a test starts inherits its URL.
pytest-django sets Django up in its own ``pytest_load_initial_conftests``; as a hook wrapper
this runs before every plain implementation of that hook, whatever order the plugins were
registered in.
"""

import os
from collections.abc import Generator

import pytest

from backend import profiles
from backend.embedded_redis import ensure_redis_url, ensure_var_dir


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, None, None]:
    os.environ["USAGE_PROFILE"] = profiles.LOCAL
    # Without pytest-django (the agent's tests in an environment of their own, or
    # -p no:django) no settings load, and nothing here is needed.
    if early_config.pluginmanager.hasplugin("django"):
        ensure_var_dir()  # the SQLite test databases live there, whatever REDIS_URL says
        ensure_redis_url()
    return (yield)
