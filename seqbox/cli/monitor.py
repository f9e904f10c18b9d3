"""``seqbox monitor``: the live full-screen view of this project's runs and queue."""

from __future__ import annotations

import os

from seqbox import history, monitor
from seqbox.project import project_root


def monitor_main(once: bool) -> int:
    root = project_root(os.getcwd())
    return monitor.run(root, history.log_directory(os.getcwd(), os.environ), once=once)
