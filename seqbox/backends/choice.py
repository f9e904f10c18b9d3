"""The choice of backend: ``auto`` tries cgroup2, then cgroup1, then falls
back to poll (saying so once); a backend asked for by name must be usable.
"""

from __future__ import annotations

from seqbox.backends.base import Backend, Limits, Probe, Sandbox
from seqbox.backends.host import LINUX, NAME
from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from seqbox.backends.systemd.scope import Scope


def _cgroup2(scope: Scope | None) -> Backend:
    from seqbox.backends.cgroup.v2 import Cgroup2Backend

    if scope is None:
        return Cgroup2Backend()
    return Cgroup2Backend(scope.failure, lock_slice=scope.lock_slice)


def _cgroup1(scope: Scope | None) -> Backend:
    from seqbox.backends.cgroup.v1 import Cgroup1Backend

    return Cgroup1Backend()


def _poll(scope: Scope | None = None) -> Backend:
    from seqbox.backends.poll.backend import PollBackend

    return PollBackend(linux=LINUX)


#: every backend this platform could have, best first (made on demand: each
#: module is imported only when its backend is looked at), each made knowing
#: what the scope step did: why it found no delegated scope, if it did not;
#: the lock's slice (the lock's parent cgroup) its scope is in, if it is
MAKERS: dict[str, Callable[[Scope | None], Backend]] = (
    {"cgroup2": _cgroup2, "cgroup1": _cgroup1, "poll": _poll} if LINUX else {"poll": _poll}
)


def candidates(scope: Scope | None = None) -> list[Backend]:
    """Every backend this platform could have, best first."""
    return [make(scope) for make in MAKERS.values()]


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


def select(name: str = "auto", scope: Scope | None = None) -> Selection:
    """The backend ``name`` (or the best usable one for ``auto``), after the
    scope step (``scope``: what :func:`~seqbox.backends.systemd.scope.enter_scope`
    returned, None where it was not taken, as for the library's callers)."""
    if name != "auto":
        make = MAKERS.get(name)
        if make is None:
            raise BackendError(f"backend {name} does not exist on {NAME}", hint="see 'seqbox doctor'")
        backend = make(scope)
        probe = backend.probe()
        if not probe.usable:
            raise BackendError(
                f"backend {name} is not usable here: {probe.reason}", hint="see 'seqbox doctor'"
            )
        return Selection(backend, probe, [])
    rejected: list[Probe] = []
    for make in MAKERS.values():
        backend = make(scope)
        probe = backend.probe()
        if probe.usable:
            return Selection(backend, probe, rejected, auto=True)
        rejected.append(probe)
    raise BackendError("no backend is usable: " + "; ".join(f"{p.name}: {p.reason}" for p in rejected))
