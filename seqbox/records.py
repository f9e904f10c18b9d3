"""Typed records that cross module (and process) boundaries.

Imported only under ``TYPE_CHECKING``: at run time these are plain dicts (JSON
in the queue's files), so they cost nothing on ``seqbox run``'s start-up. What
another process wrote is checked once, where it is read
(:func:`seqbox.queue.read_entry`, :func:`seqbox.history.parse`), not by every
reader, against the field tables in :mod:`seqbox.schema` (a test holds each
table and its typed form here to the same keys).
"""

from __future__ import annotations

from typing import TypedDict


class SandboxInfo(TypedDict, total=False):
    """Where a running sandbox can be looked at (``Sandbox.describe()``)."""

    backend: str
    #: the cgroup directories the run made (killed and removed after a crash)
    cgroups: list[str]
    #: files ``seqbox status`` reads the tree's memory and processes from
    mem_file: str
    procs_file: str
    #: a polled tree's record of its members (pid and start time)
    tree: str


class Entry(TypedDict, total=False):
    """A place in a lock's queue: what a waiter writes in its ticket, and a
    holder in its slot as soon as it holds it (the ``SandboxInfo`` keys and
    ``since`` then)."""

    pid: int
    #: the process's start time (see backends.procinfo), against pid reuse
    start: float | None
    command: list[str]
    #: the command's working directory (absolute)
    cwd: str
    run_id: str
    lock: str
    mem: int | None
    pids: int | None
    #: the share of ``mem`` at which it warns (a nested run then need not)
    warn_at: float | None
    arrived: float
    number: int
    #: when the run took its slot (its command starts within a millisecond)
    since: float
    backend: str
    cgroups: list[str]
    mem_file: str
    procs_file: str
    tree: str
    #: the holder handed over in order: its tree was ended
    ended: bool
    #: with --budget: the memory this run reserves, and the budget it counts against
    reservation: int
    budget: int
    #: how the reservation was chosen: given, learned or mem (section 3b)
    reserved_how: str
    #: what the head of a lock with a budget waits for (in its ticket)
    waiting_for: str


class ProbeFacts(TypedDict):
    name: str
    usable: bool
    reason: str
    details: dict[str, object]


class EnclosingFacts(TypedDict):
    """A cgroup above seqbox that limits memory."""

    path: str
    limit_bytes: int
    usage_bytes: int


class MemoryFacts(TypedDict):
    """What memory seqbox may count on here (``--budget auto``)."""

    total_bytes: int
    available_bytes: int
    #: the cgroups above seqbox (a container's, a CI job's) with a memory limit
    enclosing: list[EnclosingFacts]
    #: memory pressure, ``some avg10`` in percent; None where the kernel has none
    pressure: float | None
    #: the smallest of the machine's memory and every enclosing limit
    ceiling_bytes: int
    #: what ``--budget auto`` is here: the ceiling less the reserve
    budget_auto_bytes: int


class DoctorFacts(TypedDict, total=False):
    """What ``seqbox doctor`` reports (``--json`` prints it as is)."""

    os: str
    kernel: str
    python: str
    uid: int
    cgroup_layout: str
    cgroup_v1_controllers: list[str]
    cgroup2_mounts: list[str]
    read_only_mounts: list[str]
    self_cgroup: dict[str, str]
    swap_devices: int
    backends: list[ProbeFacts]
    backend: str | None
    why: str
    delegated_scope: bool
    kernel_enforced: bool
    #: what would give a cgroup backend here (when only polling is left)
    hint: str
    memory: MemoryFacts
    state_dir: str
    log_dir: str


class RunningStatus(TypedDict):
    pid: int | None
    command: list[str] | None
    #: the working directory, relative to the project (absolute outside it)
    cwd: str | None
    elapsed_s: float | None
    mem_bytes: int | None
    mem_limit_bytes: int | None
    procs: int | None
    backend: str | None
    reservation_bytes: int | None
    #: how the reservation was chosen (given, learned, mem), and frozen for the budget (section 3b)
    reservation_how: str | None
    frozen: bool
    run_id: str | None


class WaitingStatus(TypedDict):
    position: int
    pid: int | None
    command: list[str] | None
    cwd: str | None
    waiting_s: float
    waiting_for: str | None


class BudgetStatus(TypedDict):
    """A lock's memory budget and what its holders reserve; None without --budget."""

    budget_bytes: int | None
    reserved_bytes: int | None


class LockStatus(BudgetStatus):
    lock: str
    running: list[RunningStatus]
    waiting: list[WaitingStatus]


class OrphanStatus(TypedDict):
    """What a crashed run left running (its supervisor is gone)."""

    #: the crashed run's cgroup or poll record name (``seqbox-<project>-<time>-<pid>``)
    name: str
    processes: int
    commands: list[str]


class Status(TypedDict):
    """``seqbox status --json``."""

    project: str
    locks: list[LockStatus]
    orphaned: list[OrphanStatus]


class LimitsRecord(TypedDict, total=False):
    """The limits a run log's ``start`` event records (None: no such limit)."""

    mem: int | None
    mem_high: int | None
    warn_at: float | None
    pids: int | None
    cpus: float | None
    timeout: float | None
    grace: float | None
    signal: int | None
    retry: int | None


class Culprit(TypedDict):
    """One of the tree's biggest processes at the last sample."""

    pid: int
    command: str
    rss_bytes: int


class SummaryRecord(TypedDict, total=False):
    """The summary as a run log's ``exit`` event carries it, read back
    (``seqbox logs``, ``report``): the fields of :class:`seqbox.summary.Summary`."""

    command: list[str] | None
    status: str | None
    exit_code: int | None
    signal: int | None
    wall_s: float | None
    cpu_s: float | None
    peak_mem_bytes: int | None
    mem_limit_bytes: int | None
    procs_peak: int | None
    backend: str | None
    lock: str | None
    lock_wait_s: float | None
    attempts: int | None
    run_id: str | None
    log: str | None
    reserved_bytes: int | None
    frozen_s: float | None
    culprit: list[Culprit] | None


class RunEvent(TypedDict, total=False):
    """One line of a run log, as read back (keys of the wrong type dropped)."""

    event: str
    t: float
    # start
    run_id: str | None
    command: list[str] | None
    cwd: str | None
    pid: int | None
    backend: str | None
    lock: str | None
    nested: bool | None
    limits: LimitsRecord
    output_log: str | None
    # start, under a budget (section 3b): the learning key, the reservation and why
    key: str | None
    reserved: int | None
    reserved_how: str | None
    budget: int | None
    # lock
    waited_s: float | None
    got: bool | None
    # sample (and a memory or pids kill)
    mem: int | None
    procs: int | None
    cpu_s: float | None
    # warn, kill, error
    message: str | None
    reason: str | None
    # freeze, thaw (section 3b): the lock's total; how long the thawed tree was frozen
    total: int | None
    frozen_s: float | None
    # exit
    summary: SummaryRecord
    # error
    exit_code: int | None
    status: str | None
