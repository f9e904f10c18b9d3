"""Backend selection: the one place that looks at the platform and the cgroup layout.

``auto`` tries cgroup2, then cgroup1, then falls back to poll (saying so once).
"""

from __future__ import annotations

import sys

from seqbox.backends.base import Backend, Limits, Probe, Sandbox, Usage
from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from seqbox.backends.scope import DelegationPlan

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
    """The backend to use, its probe, and the backends tried before it.

    ``auto`` says the user let seqbox choose: a cgroup backend that fails when
    making a sandbox then falls back to polling (see :meth:`make_sandbox`).
    """

    __slots__ = ("auto", "backend", "probe", "rejected")

    def __init__(self, backend: Backend, probe: Probe, rejected: list[Probe], auto: bool = False) -> None:
        self.backend = backend
        self.probe = probe
        self.rejected = rejected
        self.auto = auto

    def fallback_note(self) -> str | None:
        """The one line to print when auto fell back to polling."""
        if self.backend.kernel_enforced or not self.rejected:
            return None
        why = "; ".join(f"{p.name}: {p.reason}" for p in self.rejected)
        return f"no usable cgroup ({why}); enforcing limits by polling instead"

    def fallback_cause(self) -> str | None:
        """Why a delegated scope (the usual way to a cgroup without root) was not
        there, when that is why auto fell back to polling: worth saying even in
        the short note (a stale user manager socket is something to fix)."""
        if self.backend.kernel_enforced:
            return None
        for probe in self.rejected:
            if probe.details.get("delegation") and not probe.details.get("user_manager", True):
                cause = probe.details.get("user_manager_reason")
                return str(cause) if cause else None
        return None

    def make_sandbox(
        self, limits: Limits, name: str, records: str | None = None
    ) -> tuple[Sandbox, str | None]:
        """The sandbox for one try, and the note to print when the chosen cgroup
        backend failed here and (under ``auto``) polling took over."""
        try:
            return self.backend.create(limits, name, records), None
        except BackendError as err:
            if not self.auto or not self.backend.kernel_enforced:
                raise
            failed = self.backend.name
            self.backend = _poll()
            self.probe = self.backend.probe()
            note = f"{failed} failed ({err}); enforcing limits by polling instead"
            return self.backend.create(limits, name, records), note


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
            return Selection(backend, probe, rejected, auto=True)
        rejected.append(probe)
    raise BackendError("no backend is usable: " + "; ".join(f"{p.name}: {p.reason}" for p in rejected))


def delegation_plan(run_args: list[str], backend: str) -> DelegationPlan:
    """Whether ``seqbox run RUN_ARGS`` re-runs itself in a delegated systemd
    scope to give an unprivileged user a cgroup v2 of its own, and why (not)
    (see backends/scope.py). ``run`` and ``doctor`` both ask this."""
    import os

    from seqbox.backends.scope import DelegationPlan, delegation_plan

    if not LINUX:
        return DelegationPlan(None, "no systemd here")
    uid = os.getuid()
    if uid == 0 or backend not in ("auto", "cgroup2"):  # no probe needed
        return delegation_plan(run_args, python="", environ=os.environ, uid=uid, backend=backend,
                               cgroup2={}, systemd_run=None)  # fmt: skip
    probe = _cgroup2().probe()
    if probe.usable:
        return DelegationPlan(None, "cgroup2 is usable without a scope")
    import shutil

    return delegation_plan(
        run_args,
        python=sys.executable,
        environ=os.environ,
        uid=uid,
        backend=backend,
        cgroup2=probe.details,
        systemd_run=shutil.which("systemd-run"),
    )


#: file descriptors a re-run of seqbox inside a scope needs (Python's start-up alone takes ~10)
MIN_FDS_FOR_A_SCOPE = 64


def in_delegated_scope(run_args: list[str], backend: str, say: Callable[[str], None]) -> int | None:
    """Move into a delegated scope when the plan says so; None to run here
    (in the scope, or without one: no scope was wanted, this is the seqbox
    re-run inside one, or neither way to a scope worked and the fallback note
    will say so). The scope is asked for over D-Bus, for this process; failing
    that, seqbox re-runs itself under systemd-run and returns that run's exit
    status. ``say`` hears which way it went (for ``-v``)."""
    import os

    from seqbox.backends import scope

    if os.environ.get(scope.SCOPE_ENV):  # the re-run inside the scope, or after a failed try
        scope.report_started(os.environ)
        return None
    plan = delegation_plan(run_args, backend)
    if plan.command is None:
        return None
    import time

    from seqbox.backends.scope_dbus import move_into_scope

    start = time.monotonic()
    try:
        unit = move_into_scope(scope.private_socket(os.environ), "seqbox run " + " ".join(run_args))
    except BackendError as err:
        over_dbus = str(err)
    else:
        took = time.monotonic() - start
        say(f"in a delegated scope from the systemd user manager, asked for over D-Bus: {unit} ({took:.3f}s)")
        os.environ[scope.SCOPE_ENV] = scope.STARTED
        return None
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < MIN_FDS_FOR_A_SCOPE:
        # a second Python could not even start: run here (and say so if it fails)
        os.environ[scope.SCOPE_ENV] = scope.FAILED_PREFIX + f"no delegated scope over D-Bus ({over_dbus})"
        return None
    say(f"no delegated scope over D-Bus ({over_dbus}); asking systemd-run: {' '.join(plan.command[:7])}")
    started, code = scope.run_in_scope(plan.command, os.environ)
    if started:
        return code
    os.environ[scope.SCOPE_ENV] = scope.failed_marker(code)
    return None


def own_cgroup_names() -> set[str]:
    """Every path component of this process's cgroups (nothing where there are none)."""
    if not LINUX:
        return set()
    from seqbox.backends import cgroupfs

    return cgroupfs.own_cgroup_names()


def probe_all() -> list[Probe]:
    """Every candidate's probe (for ``seqbox doctor``)."""
    return [backend.probe() for backend in candidates()]


def usage_of(entry: Mapping[str, object]) -> tuple[int | None, int | None]:
    """Memory and process count of a running holder's tree (for ``seqbox
    status``), from what its sandbox described (a queue entry)."""
    from seqbox.backends.usage import usage_of as read

    return read(entry)
