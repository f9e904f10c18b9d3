"""A delegated cgroup from systemd, for an unprivileged user.

On a systemd machine an ordinary user may not create cgroups where its shell
runs, but its user manager hands out delegated scopes: seqbox re-executes
itself as ``systemd-run --user --scope -p Delegate=yes -- seqbox run ...``,
and inside the scope (where it is alone) makes its cgroups as usual.
"""

from __future__ import annotations

import os

SCOPE_ENV = "SEQBOX_IN_SCOPE"


def scope_command(
    run_args: list[str],
    *,
    python: str,
    environ: dict[str, str] | os._Environ[str],
    uid: int,
    backend: str,
    cgroup2_needs_delegation: bool,
    systemd_run: str | None,
) -> list[str] | None:
    """The command that re-runs ``seqbox run RUN_ARGS`` in a delegated scope,
    or None when that would not help (root, another backend asked for, already
    in a scope, no systemd user manager, or cgroup2 is missing for another
    reason than permissions)."""
    if uid == 0 or backend not in ("auto", "cgroup2") or environ.get(SCOPE_ENV):
        return None
    if not cgroup2_needs_delegation or systemd_run is None:
        return None
    runtime = environ.get("XDG_RUNTIME_DIR")
    if not runtime or not os.path.exists(os.path.join(runtime, "systemd", "private")):
        return None  # no user manager to ask
    return [systemd_run, "--user", "--scope", "--quiet", "--collect", "-p", "Delegate=yes",
            "--", python, "-m", "seqbox", "run", *run_args]  # fmt: skip
