"""The hot path: the modules ``seqbox run`` loads.

``seqbox run`` starts before every command it wraps (a test suite, each hook
of a pre-commit run, each step of a CI job), so what it imports is paid on
every one of them: the launch overhead is held to 40 ms
(``bench/launch_overhead.py``). The modules below are kept lean for that:
they import at top level only what every run needs and the rest where it is
used (ruff's PLC0415 is off for exactly these files, in pyproject.toml), and
they use no ``typing``, ``dataclasses``, ``re`` of their own, ``subprocess``,
``psutil``, ``typer`` or ``rich`` at run time. Every other module of the
package is ordinary Python.

``tests/project/test_hotpath.py`` runs a real ``seqbox run`` in a fresh interpreter on
each path (no lock, the queue, every backend) and holds what it imports to
these lists, and the PLC0415 exceptions to :data:`MODULES`.

Modules that only an option brings in (``--log``: capture; ``--budget``:
admission and backends.memory; a ``git`` command: gitguard) are imported where
that option is handled and are not on this list: whoever asks for the option
pays for it.
"""

from __future__ import annotations

#: seqbox's modules that ``seqbox run`` imports, on any path of any host
MODULES = frozenset(
    {
        "seqbox",
        "seqbox._version",
        "seqbox.admit",
        "seqbox.attempts",
        "seqbox.cli",
        "seqbox.cli.run",
        "seqbox.config",
        "seqbox.culprit",
        "seqbox.deadline",
        "seqbox.describe",
        "seqbox.errors",
        "seqbox.finish",
        "seqbox.flocks",
        "seqbox.housekeeping",
        "seqbox.interrupts",
        "seqbox.limits",
        "seqbox.nesting",
        "seqbox.options",
        "seqbox.output",
        "seqbox.policies",
        "seqbox.project",
        "seqbox.queue",
        "seqbox.runlog",
        "seqbox.runner",
        "seqbox.runoptions",
        "seqbox.schema",
        "seqbox.slots",
        "seqbox.spawn",
        "seqbox.state",
        "seqbox.summary",
        "seqbox.supervise",
        "seqbox.tickets",
        "seqbox.turn",
        "seqbox.units",
        "seqbox.waitline",
        "seqbox.backends",
        "seqbox.backends.base",
        "seqbox.backends.cgroup",
        "seqbox.backends.cgroup.clone3",
        "seqbox.backends.cgroup.enclosing",
        "seqbox.backends.cgroup.fs",
        "seqbox.backends.cgroup.leftovers",
        "seqbox.backends.cgroup.v1",
        "seqbox.backends.cgroup.v2",
        "seqbox.backends.choice",
        "seqbox.backends.host",
        "seqbox.backends.poll",
        "seqbox.backends.poll.backend",
        "seqbox.backends.poll.proctree",
        "seqbox.backends.poll.treerecord",
        "seqbox.backends.procinfo",
        "seqbox.backends.systemd",
        "seqbox.backends.systemd.bus",
        "seqbox.backends.systemd.rerun",
        "seqbox.backends.systemd.scope",
    }
)

#: of :data:`MODULES`, those only some hosts load: the way into a delegated
#: systemd scope (an unprivileged user on a cgroup v2 host with systemd)
HOST_SPECIFIC = frozenset({"seqbox.backends.systemd.bus"})

#: what the scope step (:data:`HOST_SPECIFIC`) imports besides :data:`STDLIB`:
#: the D-Bus client (jeepney, which imports ``typing``) and ``shutil.which``
#: for systemd-run. Only an unprivileged run on a systemd host pays for them
#: (bench/laptop_overhead.py), once per run, before the command starts.
SCOPE_IMPORTS = ("jeepney", "shutil")

#: the standard library modules the hot path imports beyond Python's own
#: start-up (each with what it imports in turn)
STDLIB = (
    "__future__",
    "ctypes",
    "errno",
    "fcntl",
    "json",
    "math",
    "resource",
    "select",
    "shlex",
    "signal",
    "socket",
    "struct",
    "time",
    "warnings",
)

#: what it never imports: each would cost every wrapped command milliseconds
#: (typer 60, typing 9, dataclasses 6, hashlib 4; tomllib 10, only where a
#: config file changed since the last run: see config.ParsedCache)
NEVER = (
    "click",
    "dataclasses",
    "hashlib",
    "psutil",
    "rich",
    "subprocess",
    "tomli",
    "tomllib",
    "typer",
    "typing",
)
