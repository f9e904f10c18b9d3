"""Enforcement backends: the interface (base.py), the choice among them
(choice.py), and the backends themselves, by kind: ``cgroup/`` (v1 and v2),
``poll/`` (polling the process tree), ``systemd/`` (a delegated scope for an
unprivileged user). ``host.py`` alone says which platform this is.
"""

from seqbox.backends.base import Backend, Limits, Probe, Sandbox, Usage
from seqbox.backends.choice import Selection, candidates, select

__all__ = ["Backend", "Limits", "Probe", "Sandbox", "Selection", "Usage", "candidates", "select"]
