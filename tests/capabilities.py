"""The one capability probe of the test suite.

Which backends and privileges this machine offers is decided here, once, by
seqbox's own probes (``seqbox.backends.candidates()``), so the tests skip for
exactly the reasons ``seqbox doctor`` gives. Tests declare what they need with
``@needs("cgroup1")`` (or the ``backend`` fixture, which needs its backend); the
conftest turns a missing capability into a skip with the probe's reason, and
into a failure when ``SEQBOX_EXPECT`` says this machine must have it.

Environment (read once, when the test session starts):

* ``SEQBOX_TEST_BACKENDS=cgroup2,poll``: the backends the contract suite runs
  against (default: every usable one, plus every expected one); ``poll-psutil``
  is the poll backend on its macOS code path (psutil, no subreaper), which
  ``SEQBOX_POLL_READER=psutil`` selects on Linux;
* ``SEQBOX_EXPECT=cgroup1,poll,root``: capabilities this machine must have; a
  test that is skipped although it needs only these fails instead;
* ``SEQBOX_TEST_DISABLE=cgroup1``: pretend a capability is missing (to see the
  suite without it, and to test the strict-skip machinery itself).

``sigint``: SIGINT is not ignored in this session, so the processes a test
starts can get it (a background job of a non-interactive shell ignores it; the
tests that send SIGINT then skip, saying so).

``user_manager``: this is an unprivileged user whose systemd user manager
answers, so ``seqbox run`` re-runs itself in a delegated scope (the laptop
lane, scripts/vm-laptop). There the cgroup2 backend counts as usable: every
``seqbox run`` of the suite gets it through such a scope. Probed with the real
environment when the session starts (tests then get their own XDG_RUNTIME_DIR,
except that they keep the real one where a user manager answers).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass

import pytest

from seqbox.backends import candidates
from seqbox.backends.poll.backend import PollBackend
from seqbox.backends.systemd.scope import plan_here
from tests.nobody import NOBODY, nobody_python

#: the session's real XDG_RUNTIME_DIR (the user manager's sockets), before any test isolates it
REAL_RUNTIME_DIR = os.environ.get("XDG_RUNTIME_DIR")
#: whether this session started with SIGINT ignored (read once, before any test sets a handler)
SIGINT_IGNORED = signal.getsignal(signal.SIGINT) == signal.SIG_IGN

BACKENDS = ("cgroup2", "cgroup1", "poll")
CGROUP_BACKENDS = ("cgroup2", "cgroup1")
#: a backend run another way: name -> (the backend, the environment that selects the way)
VARIANTS = {"poll-psutil": ("poll", {"SEQBOX_POLL_READER": "psutil"})}
CAPABILITIES = (*BACKENDS, *VARIANTS, "root", "unprivileged", "strace", "user_manager", "sigint")


@dataclass(frozen=True)
class Capability:
    """Whether this machine has one capability, and why (not)."""

    name: str
    usable: bool
    reason: str


def env_list(name: str) -> list[str] | None:
    """A comma-separated capability list from the environment (None when unset),
    validated against :data:`CAPABILITIES`."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return None
    names = [word.strip() for word in text.split(",") if word.strip()]
    unknown = [word for word in names if word not in CAPABILITIES]
    if unknown:
        raise pytest.UsageError(
            f"{name}: unknown capability {', '.join(unknown)} (known: {', '.join(CAPABILITIES)})"
        )
    return names


@functools.cache
def disabled() -> frozenset[str]:
    return frozenset(env_list("SEQBOX_TEST_DISABLE") or ())


@functools.cache
def _probes() -> dict[str, Capability]:
    found: dict[str, Capability] = {}
    for backend in candidates():
        probe = backend.probe()
        found[probe.name] = Capability(probe.name, probe.usable, probe.reason)
    cgroup2 = found.get("cgroup2")
    if cgroup2 is not None and not cgroup2.usable and _user_manager().usable:
        found["cgroup2"] = Capability(
            "cgroup2", True, f"through a delegated systemd scope ({cgroup2.reason})"
        )
    return found


@functools.cache
def _user_manager() -> Capability:
    """Would ``seqbox run`` here take a delegated systemd scope? seqbox's own
    decision, which connects to the user manager."""
    name = "user_manager"
    saved = os.environ.get("XDG_RUNTIME_DIR")
    try:  # probed with the session's real runtime dir, even if asked from inside a test
        if REAL_RUNTIME_DIR is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = REAL_RUNTIME_DIR
        plan = plan_here(["--", "true"], "auto")
    finally:
        if saved is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved
    if plan.command is None:
        return Capability(name, False, f"seqbox run would not use a delegated scope: {plan.reason}")
    return Capability(name, True, f"seqbox run uses {plan.reason}")


@functools.cache
def capability(name: str) -> Capability:
    """The probe result for ``name`` (a backend name or ``root``)."""
    if name not in CAPABILITIES:
        raise ValueError(f"unknown capability {name!r}")
    if name in disabled():
        return Capability(name, False, "disabled by SEQBOX_TEST_DISABLE")
    if name == "root":
        euid = os.geteuid()
        return Capability(name, euid == 0, "running as root" if euid == 0 else f"running as uid {euid}")
    if name == "unprivileged":
        return _unprivileged()
    if name == "strace":
        return _strace()
    if name in VARIANTS:
        return _variant(name)
    if name == "user_manager":
        return _user_manager()
    if name == "sigint":
        return _sigint()
    probe = _probes().get(name)
    if probe is None:
        return Capability(name, False, f"seqbox offers no {name} backend on this platform")
    return probe


def _variant(name: str) -> Capability:
    """A variant works where its backend does and seqbox, with the variant's
    environment, says so (the poll backend's probe names its reader)."""
    backend, env = VARIANTS[name]
    base = capability(backend)
    if not base.usable:
        return Capability(name, False, base.reason)

    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        backend_obj = PollBackend(linux=True)
        probe = backend_obj.probe()
        switched = backend_obj.switched
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if not switched:
        return Capability(name, False, f"{', '.join(env)} does not switch the {backend} reader")
    return Capability(name, probe.usable, probe.reason)


class Variant(str):
    """A backend run another way. It equals the backend's name (what a test passes
    to ``--backend`` and reads back from the summary); ``env`` selects the way
    (the ``backend`` fixture puts it in the test's environment)."""

    name: str
    env: dict[str, str]

    def __new__(cls, name: str) -> Variant:
        backend, env = VARIANTS[name]
        self = super().__new__(cls, backend)
        self.name = name
        self.env = env
        return self


def _unprivileged() -> Capability:
    """Can seqbox run as uid 65534 (see tests/nobody.py)? Needs root to switch."""
    name = "unprivileged"
    if os.geteuid() != 0:
        return Capability(name, False, "switching to uid 65534 needs root")

    python = nobody_python()
    if isinstance(python, str):
        return Capability(name, False, python)
    return Capability(name, True, f"seqbox runs as uid {NOBODY} with {python.executable}")


def _sigint() -> Capability:
    """Can SIGINT reach what the tests start? Not when the session ignores it (a
    background job of a non-interactive shell: ``bash -c 'pytest &'``): seqbox and
    its commands inherit the ignored SIGINT and rightly keep it ignored, as nohup's
    children do, so a test that sends one would only wait for its timeouts."""
    if SIGINT_IGNORED:
        return Capability(
            "sigint", False, "this session ignores SIGINT (a background job of a non-interactive shell?)"
        )
    return Capability("sigint", True, "SIGINT reaches the processes this session starts")


def _strace() -> Capability:
    """Can strace trace our children and inject syscall delays (to hold a process
    at a chosen point, deterministically)?"""
    path = shutil.which("strace")
    if path is None:
        return Capability("strace", False, "strace is not installed")
    argv = [path, "-f", "-o", "/dev/null", "-e", "trace=openat",
            "-e", "inject=openat:delay_exit=1000:when=1", "true"]  # fmt: skip
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return Capability("strace", False, f"cannot run strace: {err}")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return Capability("strace", False, f"strace cannot inject delays here: {last}")
    return Capability("strace", True, f"{path} can trace and inject delays")


def usable(name: str) -> bool:
    return capability(name).usable


def cgroup1_usable() -> bool:
    return usable("cgroup1")


def cgroup2_usable() -> bool:
    return usable("cgroup2")


def poll_usable() -> bool:
    return usable("poll")


def is_root() -> bool:
    return usable("root")


def missing_reason(names: set[str] | frozenset[str] | tuple[str, ...]) -> str | None:
    """Why the first of ``names`` this machine lacks is missing, or None if it has them all.

    The reason reads like ``cgroup2: the memory controller is not available in ...``.
    """
    for name in sorted(names):
        cap = capability(name)
        if not cap.usable:
            return f"{name}: {cap.reason}"
    return None


def auto_choice() -> str:
    """The backend ``--backend auto`` must pick: the first usable of cgroup2, cgroup1, poll,
    by seqbox's own probes (SEQBOX_TEST_DISABLE does not change what seqbox sees)."""
    probes = _probes()
    for name in BACKENDS:
        probe = probes.get(name)
        if probe is not None and probe.usable:
            return name
    raise AssertionError("no backend is usable, not even poll")


def really_usable(name: str) -> bool:
    """What seqbox itself sees, ignoring SEQBOX_TEST_DISABLE."""
    probe = _probes().get(name)
    return probe is not None and probe.usable


def probe_reason(name: str) -> str:
    """seqbox's own reason for backend ``name`` (ignoring SEQBOX_TEST_DISABLE)."""
    probe = _probes().get(name)
    return probe.reason if probe is not None else ""


def selected_backends() -> list[str]:
    """The backends the contract suite runs against.

    ``SEQBOX_TEST_BACKENDS`` if set (a requested backend that is not usable
    shows up as a skip with the probe's reason); otherwise every usable backend
    plus every backend ``SEQBOX_EXPECT`` names (so a missing one is a failure).
    """
    requested = env_list("SEQBOX_TEST_BACKENDS")
    if requested is not None:
        wrong = [name for name in requested if name not in BACKENDS and name not in VARIANTS]
        if wrong:
            raise pytest.UsageError(f"SEQBOX_TEST_BACKENDS: {', '.join(wrong)} is not a backend")
        return requested
    expected = set(env_list("SEQBOX_EXPECT") or ())
    return [name for name in (*BACKENDS, *VARIANTS) if usable(name) or name in expected]


def expected() -> frozenset[str] | None:
    """``SEQBOX_EXPECT`` as a set, or None when unset (skips stay skips)."""
    names = env_list("SEQBOX_EXPECT")
    return None if names is None else frozenset(names)


def needs(*names: str) -> pytest.MarkDecorator:
    """Mark a test as needing capabilities: ``@needs("cgroup1", "root")``."""
    for name in names:
        if name not in CAPABILITIES:
            raise ValueError(f"unknown capability {name!r}")
    return pytest.mark.needs(*names)
