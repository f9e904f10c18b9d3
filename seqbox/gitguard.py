"""Before a top-level ``git`` command: wait (up to 10 s) for the repository's
index.lock to go away, then give up naming it. Never delete it: it may belong
to a git process that is still running."""

from __future__ import annotations

import os
import time

from seqbox.errors import GitLockBusy
from seqbox.project import git_dir

INDEX_LOCK_WAIT_S = 10.0
CHECK_EVERY_S = 0.02


def wait_for_index_lock(cwd: str, timeout: float = INDEX_LOCK_WAIT_S, on_wait: object | None = None) -> float:
    """Return how long we waited; raise GitLockBusy if the lock stayed."""
    directory = git_dir(cwd)
    if directory is None:
        return 0.0
    lock = os.path.join(directory, "index.lock")
    start = time.monotonic()
    told = False
    while os.path.lexists(lock):
        waited = time.monotonic() - start
        if waited >= timeout:
            raise GitLockBusy(
                f"{lock} still exists after {timeout:g}s: another git command is "
                "running, or one crashed (remove the file yourself if you are sure)"
            )
        if not told and callable(on_wait):
            on_wait(lock)
            told = True
        time.sleep(CHECK_EVERY_S)
    return time.monotonic() - start
