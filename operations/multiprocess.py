"""The launcher's side of prometheus-client's multiprocess mode (``backend/serve.py``).

Each worker writes its metrics to files named after its pid in one directory, which must be
empty when a set of workers starts: files of an earlier run would be summed with the new
figures (a counter that never went back to zero after a restart), and gauges of processes
long dead would count as live. So the launcher makes a directory of its own under
``USAGE_VAR_DIR`` (``metrics/<its pid>``), empties it, names it in the environment its
children inherit, tells prometheus-client of each child that exits and removes the directory
when it stops. Directories that crashed launchers left behind are removed at the next start.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import multiprocess

# Read by prometheus-client as it is imported, in each worker. Nothing of Django is imported
# here: the launcher imports this module before it sets Django up.
MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


def prepare(var_dir: Path) -> Path:
    """An empty directory for this launcher's workers, named in ``os.environ`` (which the
    workers inherit). Call it before starting them."""
    parent = var_dir / "metrics"
    parent.mkdir(parents=True, exist_ok=True)
    for left in parent.iterdir():
        if left.name.isdigit() and not _running(int(left.name)):
            shutil.rmtree(left, ignore_errors=True)
    directory = parent / str(os.getpid())
    shutil.rmtree(directory, ignore_errors=True)  # a pid reused, in a container: pid 1
    directory.mkdir()
    os.environ[MULTIPROCESS_DIRECTORY] = str(directory)
    return directory


def process_exited(pid: int) -> None:
    """A worker has exited: its live gauges (open WebSockets) stop counting."""
    directory = os.environ.get(MULTIPROCESS_DIRECTORY)
    if directory:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def remove(directory: Path) -> None:
    os.environ.pop(MULTIPROCESS_DIRECTORY, None)
    shutil.rmtree(directory, ignore_errors=True)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True  # ours: emptied by prepare itself
    try:
        os.kill(pid, 0)  # no signal: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True
