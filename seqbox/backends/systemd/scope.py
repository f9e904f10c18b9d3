"""A delegated cgroup from systemd, for an unprivileged user: the scope step of
``seqbox run``, before the backend is chosen.

On a systemd machine an ordinary user may not create cgroups where its shell
runs, but its user manager hands out delegated scopes. seqbox asks for one
holding itself, over D-Bus (systemd/bus.py), and inside the scope (where it is
alone) makes its cgroups as usual. Failing that, it re-runs itself under
systemd-run (systemd/rerun.py) and waits.

Whether either is tried is decided from something real: the user manager's
private socket must accept a connection (a socket file left by a manager that
is gone refuses it). :func:`enter_scope` returns what happened as a
:class:`Scope`, which the caller hands to the backend choice
(:func:`seqbox.backends.choice.select`): a scope that could not be had is the
reason the cgroup2 backend gives for not being usable.

A seqbox nested in a run's command inherits nothing of this: inside a run's
cgroup (``/proc/self/cgroup``) the cgroup2 probe finds it is nested and needs
no scope. Only the re-run under systemd-run is told, explicitly (on the pipe
whose descriptor :data:`~seqbox.backends.systemd.rerun.STARTED_FD_ENV` names),
that it is the re-run, so that it never asks for a second scope.

A run of a lock with a budget asks for its scope in the lock's slice, whose
memory limit is the budget (seqbox/ceiling.py): the lock's runs, each in its
own scope, share that ceiling. What it got is checked in the kernel's files
once seqbox is inside (:func:`find_lock_slice`): the slice's
directory is then the :attr:`Scope.lock_slice` that the backend choice hands
to the cgroup2 backend as the lock's parent; a run that did not get it is told
why (:attr:`Scope.no_ceiling`) and fails closed (seqbox/lockbudget.py).
"""

from __future__ import annotations

import os

from seqbox.backends.host import LINUX
from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

#: how long connecting to the user manager may take (it answers in microseconds)
CONNECT_TIMEOUT = 2.0
#: file descriptors a re-run of seqbox inside a scope needs (Python's start-up alone takes ~10)
MIN_FDS_FOR_A_SCOPE = 64

#: what the scope step did (:attr:`Scope.how`)
NONE, DBUS, SYSTEMD_RUN, RERUN, FAILED = "none", "dbus", "systemd-run", "rerun", "failed"


class LockSlice:
    """The slice of the user manager that the runs of a lock with a budget
    share (seqbox/ceiling.py): its unit name (None when the lock's name makes
    one too long for systemd), its lock and the budget that is its limit
    (None for ``--budget auto``, read by :meth:`size` when a scope is asked for)."""

    __slots__ = ("budget", "lock", "unit")

    def __init__(self, unit: str | None, lock: str, budget: int | None) -> None:
        self.unit = unit
        self.lock = lock
        self.budget = budget

    def size(self) -> int:
        """The budget in bytes. ``auto`` is read once, here, before seqbox
        enters the scope: the slice is limited to it and the run's gate counts
        it (:attr:`Scope.lock_budget`)."""
        if self.budget is None:
            from seqbox.admission import auto_budget_here

            self.budget = auto_budget_here()
        return self.budget

    def __repr__(self) -> str:
        return f"LockSlice({self.unit!r}, {self.lock!r}, {self.budget})"


def lock_slice_for(lock: str, project_key: str, budget: int | str) -> LockSlice:
    """The lock's slice for a run with ``--budget`` (a size, or ``auto``)."""
    from seqbox.backends.base import lock_slice_name

    return LockSlice(lock_slice_name(lock, project_key), lock, budget if isinstance(budget, int) else None)


class Scope:
    """What the scope step did: ``how`` (:data:`NONE`: no scope was wanted;
    :data:`DBUS`: this process moved into one asked for over D-Bus;
    :data:`SYSTEMD_RUN`: a second seqbox ran under systemd-run, inside one;
    :data:`RERUN`: this is that second seqbox;
    :data:`FAILED`: neither way gave one) and why (or the unit's name).
    ``exit_code`` is set when systemd-run ran the whole run in a second
    seqbox, which ended with that status: the caller returns it.

    For a run of a lock with a budget in a scope: ``lock_slice``, the
    directory of the lock's slice the scope is in (the lock's parent cgroup,
    limited to the budget) and ``lock_budget``, that budget in bytes (for
    ``--budget auto``, admission's gate takes it rather than reading the
    machine again), or ``no_ceiling``, why the scope is not in it."""

    __slots__ = ("exit_code", "how", "lock_budget", "lock_slice", "no_ceiling", "why")

    def __init__(self, how: str, why: str, exit_code: int | None = None) -> None:
        self.how = how
        self.why = why
        self.exit_code = exit_code
        self.lock_slice: str | None = None
        self.lock_budget: int | None = None
        self.no_ceiling: str | None = None

    @property
    def failure(self) -> str | None:
        """Why no scope could be had (None unless it was tried and failed)."""
        return self.why if self.how == FAILED else None

    def __repr__(self) -> str:
        return f"Scope({self.how!r}, {self.why!r}, exit_code={self.exit_code})"


class DelegationPlan:
    """Whether ``seqbox run`` takes a delegated scope (``command`` is then the
    systemd-run argv to re-run itself with, when asking over D-Bus fails), and
    why (not)."""

    __slots__ = ("command", "reason")

    def __init__(self, command: list[str] | None, reason: str) -> None:
        self.command = command
        self.reason = reason

    def __repr__(self) -> str:
        return f"DelegationPlan({self.command!r}, {self.reason!r})"


def private_socket(environ: Mapping[str, str]) -> str:
    """The user manager's private D-Bus socket ("" without XDG_RUNTIME_DIR)."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "systemd", "private") if runtime else ""


def user_manager(environ: Mapping[str, str]) -> tuple[bool, str]:
    """Does a systemd user manager answer for this user? (answers, why).

    Connects to ``$XDG_RUNTIME_DIR/systemd/private``, the socket systemd-run
    itself talks to first: a live manager accepts at once, a stale socket file
    refuses (ECONNREFUSED)."""
    path = private_socket(environ)
    if not path:
        return False, "no systemd user manager (XDG_RUNTIME_DIR is not set)"
    if not os.path.exists(path):
        return False, f"no systemd user manager ({path} does not exist)"
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(path)
    except ConnectionRefusedError:
        return False, f"no systemd user manager answers at {path} (a stale socket)"
    except OSError as err:
        return False, f"cannot reach the systemd user manager at {path}: {err.strerror or err}"
    finally:
        sock.close()
    return True, f"the systemd user manager answers at {path}"


def delegation_plan(
    run_args: list[str],
    *,
    python: str,
    uid: int,
    backend: str,
    cgroup2: Mapping[str, object],
    systemd_run: str | None,
) -> DelegationPlan:
    """Pure: the plan for ``seqbox run RUN_ARGS``.

    ``cgroup2`` is the cgroup2 probe's details: ``delegation`` (the controllers
    are there, only not ours) and ``user_manager`` (whether one answers, from
    :func:`user_manager`) with ``user_manager_reason``."""
    if uid == 0:
        return DelegationPlan(None, "root makes its own cgroups")
    if backend not in ("auto", "cgroup2"):
        return DelegationPlan(None, f"--backend {backend} was asked for")
    if not cgroup2.get("delegation"):
        return DelegationPlan(None, "a delegated scope would not give a cgroup v2 with the memory controller")
    if systemd_run is None:
        return DelegationPlan(None, "systemd-run is not installed")
    if not cgroup2.get("user_manager"):
        return DelegationPlan(None, str(cgroup2.get("user_manager_reason") or "no systemd user manager"))
    command = [systemd_run, "--user", "--scope", "--quiet", "--collect", "-p", "Delegate=yes",
               "--", python, "-m", "seqbox", "run", *run_args]  # fmt: skip
    return DelegationPlan(
        command, "a delegated scope from the systemd user manager (over D-Bus, or systemd-run --user --scope)"
    )


def plan_here(run_args: list[str], backend: str) -> DelegationPlan:
    """Whether ``seqbox run RUN_ARGS`` moves into a delegated systemd scope
    here, to give an unprivileged user a cgroup v2 of its own, and why (not).
    ``run`` and ``doctor`` both ask this."""
    if not LINUX:
        return DelegationPlan(None, "no systemd here")
    uid = os.getuid()
    if uid == 0 or backend not in ("auto", "cgroup2"):  # no probe needed
        return delegation_plan(run_args, python="", uid=uid, backend=backend, cgroup2={}, systemd_run=None)
    from seqbox.backends.cgroup.v2 import Cgroup2Backend

    probe = Cgroup2Backend().probe()
    if probe.usable:
        return DelegationPlan(None, "cgroup2 is usable without a scope")
    import shutil
    import sys

    return delegation_plan(
        run_args,
        python=sys.executable,
        uid=uid,
        backend=backend,
        cgroup2=probe.details,
        systemd_run=shutil.which("systemd-run"),
    )


def enter_scope(
    run_args: list[str],
    backend: str,
    say: Callable[[str], None],
    lock_slice: Callable[[], LockSlice] | None = None,
) -> Scope:
    """Move into a delegated scope when the plan says so. The scope is asked
    for over D-Bus, for this process; failing that, seqbox re-runs itself
    under systemd-run (the returned scope then carries that run's exit
    status). ``say`` hears which way it went (for ``-v``). ``lock_slice``
    (for a run of a lock with a budget) names the lock's slice the scope goes
    in, asked only when a scope is taken."""
    from seqbox.backends.systemd import rerun

    if rerun.report_started(os.environ):
        scope = Scope(RERUN, "re-run by systemd-run inside a delegated scope")
        if lock_slice is not None:  # the first seqbox limited the slice: auto is that limit
            _check_slice(scope, lock_slice(), None, inherited=True)
        return scope
    plan = plan_here(run_args, backend)
    if plan.command is None:
        return Scope(NONE, plan.reason)
    import time

    start = time.monotonic()
    wanted = None if lock_slice is None else lock_slice()
    try:
        from seqbox.backends.systemd.bus import SliceAsk, move_into_scope  # jeepney: only on this path

        ask = None
        if wanted is not None and wanted.unit is not None:
            ask = SliceAsk(
                wanted.unit, wanted.size(), f'seqbox: the runs of lock "{wanted.lock}", within its budget'
            )
        unit, slice_failure = move_into_scope(
            private_socket(os.environ), "seqbox run " + " ".join(run_args), lock_slice=ask
        )
    except ImportError as err:  # a dependency left out: systemd-run still works
        over_dbus = f"no delegated scope over D-Bus (cannot import {err.name}: {err})"
    except BackendError as err:
        over_dbus = f"no delegated scope over D-Bus ({err})"
    else:
        took = time.monotonic() - start
        say(f"in a delegated scope from the systemd user manager, asked for over D-Bus: {unit} ({took:.3f}s)")
        scope = Scope(DBUS, unit)
        if wanted is not None:
            _check_slice(scope, wanted, slice_failure)
        return scope
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < MIN_FDS_FOR_A_SCOPE:
        return Scope(FAILED, over_dbus)  # a second Python could not even start: run here
    command = plan.command
    if wanted is not None and wanted.unit is not None:
        why = rerun.limit_slice(wanted.unit, wanted.size(), os.environ)
        if why is None:
            command = rerun.with_slice(command, wanted.unit)
        else:  # the re-run finds itself outside the lock's slice and fails closed
            say(f"the lock's slice {wanted.unit} has no limit ({why}): not using it")
    say(f"{over_dbus}; asking systemd-run: {' '.join(command[: command.index('--')])}")
    started, code = rerun.run_in_scope(command, os.environ)
    if started:
        return Scope(SYSTEMD_RUN, "systemd-run ran it in a delegated scope", exit_code=code)
    return Scope(FAILED, rerun.failure(code))


def _check_slice(scope: Scope, wanted: LockSlice, failure: str | None, inherited: bool = False) -> None:
    """Set ``scope.lock_slice`` and ``scope.lock_budget`` when this process is
    in a scope inside the lock's slice and the slice holds its runs to the
    budget, else ``scope.no_ceiling``. In the re-run under systemd-run
    (``inherited``) ``auto`` is the slice's own limit, which the first seqbox
    set: it is not read again."""
    if wanted.unit is None:
        scope.no_ceiling = f'the lock name "{wanted.lock}" makes too long a name for a systemd slice'
        return
    if failure is not None:
        scope.no_ceiling = failure
        return
    budget = wanted.budget if inherited else wanted.size()
    scope.lock_slice, scope.lock_budget, scope.no_ceiling = find_lock_slice(wanted.unit, budget)


#: how long the scope step waits for systemd to write the lock slice's limit
#: (it writes it before it makes the scope's cgroup inside: this is insurance)
SLICE_LIMIT_WAIT = 0.5


def find_lock_slice(unit: str, budget: int | None) -> tuple[str | None, int | None, str | None]:
    """After the scope step: (the directory of the lock's slice ``unit`` that
    this process's scope is in, the budget, None) when it holds the lock's
    runs to ``budget`` (None: to the limit the slice has), else (None, None,
    why not). Read from /proc/self/cgroup and the slice's own limit files: what
    the kernel enforces, not what was asked."""
    from seqbox.backends.cgroup import fs as cgroupfs
    from seqbox.ceiling import slice_dir, slice_fault, slice_limit

    try:
        own = [c.path for c in cgroupfs.own_cgroups() if c.key == cgroupfs.UNIFIED]
    except BackendError as err:
        return None, None, f"cannot read this process's cgroup: {err}"
    if not own:
        return None, None, "this process is in no cgroup v2"
    parent = slice_dir(own[0], unit)
    if parent is None:
        return None, None, f"this run's scope is in {os.path.dirname(own[0])}, not in the lock's slice {unit}"
    import time

    deadline = time.monotonic() + SLICE_LIMIT_WAIT
    while True:
        size = slice_limit(parent) if budget is None else budget
        fault = "it has no memory limit" if size is None else slice_fault(parent, size)
        if fault is None or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    if fault is not None:
        return None, None, f"the lock's slice {unit}: {fault}"
    return parent, size, None
