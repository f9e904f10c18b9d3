"""What ``seqbox doctor`` reports: the machine, the cgroup layout, each
backend's probe, the one ``auto`` picks and why."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import TYPE_CHECKING

from seqbox.backends import memory
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.choice import candidates
from seqbox.backends.host import LINUX, cgroup_layout
from seqbox.backends.systemd.scope import plan_here

if TYPE_CHECKING:
    from seqbox.records import DoctorFacts, MemoryFacts


def platform_facts() -> DoctorFacts:
    """OS, kernel and cgroup layout."""
    facts: DoctorFacts = {
        "os": platform.system(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uid": os.getuid(),
    }
    if not LINUX:
        facts["cgroup_layout"] = "none"
        return facts
    # read afresh, tolerating errors: doctor must explain, not fail
    mounts = cgroupfs.parse_mountinfo(cgroupfs.try_read("/proc/self/mountinfo") or "")
    v1 = sorted({c for m in mounts if m.fstype == "cgroup" for c in m.controllers})
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    layout = cgroup_layout([(m.fstype, bool(m.controllers)) for m in mounts])
    facts["cgroup_layout"] = layout
    facts["cgroup_v1_controllers"] = v1
    facts["cgroup2_mounts"] = [m.path for m in v2]
    facts["read_only_mounts"] = sorted(m.path for m in mounts if m.read_only)
    facts["self_cgroup"] = cgroupfs.parse_proc_cgroup(cgroupfs.try_read("/proc/self/cgroup") or "")
    swap = cgroupfs.try_read("/proc/swaps") or ""
    facts["swap_devices"] = max(0, len(swap.strip().splitlines()) - 1)
    return facts


def diagnose() -> DoctorFacts:
    """Every fact, JSON-ready: the platform, each backend's probe, the one
    ``auto`` picks and why, and whether the kernel enforces the limits."""
    facts = platform_facts()
    probed = [(backend, backend.probe()) for backend in candidates()]
    probes = [probe for _, probe in probed]
    chosen = next((probe for probe in probes if probe.usable), None)
    facts["backends"] = [
        {"name": p.name, "usable": p.usable, "reason": p.reason, "details": p.details} for p in probes
    ]
    facts["backend"] = chosen.name if chosen else None
    enforced = any(backend.kernel_enforced for backend, probe in probed if probe is chosen)
    if chosen is None:
        facts["why"] = "no backend is usable"
    elif not enforced:
        rejected = "; ".join(f"{p.name}: {p.reason}" for p in probes if not p.usable)
        facts["why"] = f"no usable cgroup ({rejected}); {chosen.reason}"
    else:
        facts["why"] = chosen.reason
    facts["delegated_scope"] = False
    if chosen is not None and chosen.name != "cgroup2":
        plan = plan_here([], "auto")  # what `seqbox run` does for this user
        if plan.command is not None:
            facts["backend"] = "cgroup2"
            facts["why"] = f"inside {plan.reason}"
            facts["delegated_scope"] = True
            enforced = True
    facts["kernel_enforced"] = enforced
    if not enforced:  # what would give a cgroup backend here, when a probe knows
        hints = [str(p.details["hint"]) for p in probes if not p.usable and p.details.get("hint")]
        if hints:
            facts["hint"] = hints[0]
    return facts


def memory_facts(budget_of: Callable[[int], int]) -> MemoryFacts:
    """The memory seqbox may count on, and what ``--budget auto`` makes of it
    (``budget_of``: the ceiling less the reserve, admission's arithmetic)."""
    state = memory.read_state()
    ceiling = state.ceiling()
    return {
        "total_bytes": state.total,
        "available_bytes": state.available_now(),
        "enclosing": [
            {"path": c.path, "limit_bytes": c.limit, "usage_bytes": c.usage} for c in state.enclosing
        ],
        "pressure": state.pressure,
        "ceiling_bytes": ceiling,
        "budget_auto_bytes": budget_of(ceiling),
    }
