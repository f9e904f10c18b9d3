"""Backend selection: the one place that looks at the platform and the cgroup layout.

``auto`` tries cgroup2, then cgroup1, then falls back to poll (saying so once).
"""

from __future__ import annotations

import sys

from seqbox.backends.base import Backend, Limits, Probe, Sandbox, Usage
from seqbox.errors import BackendError

__all__ = ["Backend", "Limits", "Probe", "Sandbox", "Selection", "Usage", "candidates", "select"]

LINUX = sys.platform.startswith("linux")


def _cgroup2() -> Backend:
    from seqbox.backends.cgroup2 import Cgroup2Backend

    return Cgroup2Backend()


def _cgroup1() -> Backend:
    from seqbox.backends.cgroup1 import Cgroup1Backend

    return Cgroup1Backend()


def _poll() -> Backend:
    from seqbox.backends.poll import PollBackend

    return PollBackend(linux=LINUX)


#: every backend this platform could have, best first (made on demand: each
#: module is imported only when its backend is looked at)
MAKERS = {"cgroup2": _cgroup2, "cgroup1": _cgroup1, "poll": _poll} if LINUX else {"poll": _poll}


def candidates() -> list[Backend]:
    """Every backend this platform could have, best first."""
    return [make() for make in MAKERS.values()]


class Selection:
    """The backend to use, its probe, and the backends tried before it."""

    __slots__ = ("backend", "probe", "rejected")

    def __init__(self, backend: Backend, probe: Probe, rejected: list[Probe]) -> None:
        self.backend = backend
        self.probe = probe
        self.rejected = rejected

    def fallback_note(self) -> str | None:
        """The one line to print when auto fell back to polling."""
        if self.backend.name != "poll" or not self.rejected:
            return None
        why = "; ".join(f"{p.name}: {p.reason}" for p in self.rejected)
        return f"no usable cgroup ({why}); enforcing limits by polling instead"


def select(name: str = "auto") -> Selection:
    """The backend ``name`` (or the best usable one for ``auto``)."""
    if name != "auto":
        make = MAKERS.get(name)
        if make is None:
            raise BackendError(f"backend {name} does not exist on {sys.platform}", hint="see 'seqbox doctor'")
        backend = make()
        probe = backend.probe()
        if not probe.usable:
            raise BackendError(
                f"backend {name} is not usable here: {probe.reason}", hint="see 'seqbox doctor'"
            )
        return Selection(backend, probe, [])
    rejected: list[Probe] = []
    for make in MAKERS.values():
        backend = make()
        probe = backend.probe()
        if probe.usable:
            return Selection(backend, probe, rejected)
        rejected.append(probe)
    raise BackendError("no backend is usable: " + "; ".join(f"{p.name}: {p.reason}" for p in rejected))


def delegation_command(run_args: list[str], backend: str) -> list[str] | None:
    """``systemd-run --user --scope ... seqbox run RUN_ARGS`` when that would
    give an unprivileged user a cgroup v2 of its own (see backends/scope.py)."""
    import os

    if not LINUX or os.getuid() == 0:
        return None
    from seqbox.backends.scope import SCOPE_ENV, scope_command

    if os.environ.get(SCOPE_ENV):
        return None
    probe = _cgroup2().probe()
    if probe.usable:
        return None
    import shutil

    return scope_command(
        run_args,
        python=sys.executable,
        environ=os.environ,
        uid=os.getuid(),
        backend=backend,
        cgroup2_needs_delegation=bool(probe.details.get("delegation")),
        systemd_run=shutil.which("systemd-run"),
    )


def probe_all() -> list[Probe]:
    """Every candidate's probe (for ``seqbox doctor``)."""
    return [backend.probe() for backend in candidates()]


def platform_facts() -> dict[str, object]:
    """OS, kernel and cgroup layout, for ``seqbox doctor``."""
    import os
    import platform

    facts: dict[str, object] = {
        "os": platform.system(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uid": os.getuid(),
    }
    if not LINUX:
        facts["cgroup_layout"] = "none"
        return facts
    from seqbox.backends import cgroupfs

    mounts = cgroupfs.parse_mountinfo(cgroupfs.try_read("/proc/self/mountinfo") or "")
    v1 = sorted({c for m in mounts if m.fstype == "cgroup" for c in m.controllers})
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    if v1 and v2:
        layout = "hybrid"
    elif v1:
        layout = "v1"
    elif v2:
        layout = "v2"
    else:
        layout = "none"
    facts["cgroup_layout"] = layout
    facts["cgroup_v1_controllers"] = v1
    facts["cgroup2_mounts"] = [m.path for m in v2]
    facts["read_only_mounts"] = sorted(m.path for m in mounts if m.read_only)
    facts["self_cgroup"] = cgroupfs.parse_proc_cgroup(cgroupfs.try_read("/proc/self/cgroup") or "")
    swap = cgroupfs.try_read("/proc/swaps") or ""
    facts["swap_devices"] = max(0, len(swap.strip().splitlines()) - 1)
    return facts
