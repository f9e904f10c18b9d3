"""The one error family of seqbox.

Library code raises these; only the CLI's top-level handler turns them into
``seqbox: <message>`` on stderr and an exit code (125 unless said otherwise).
"""

from __future__ import annotations

EXIT_SEQBOX_FAILED = 125


class SeqboxError(Exception):
    """seqbox could not do its job. ``str(err)`` is the one line a user sees."""

    exit_code: int = EXIT_SEQBOX_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(SeqboxError):
    """A bad option or argument."""


class ConfigError(SeqboxError):
    """A bad config file, environment variable or profile."""


class BackendError(SeqboxError):
    """An enforcement backend is unusable or failed."""


class StateError(SeqboxError):
    """The per-user state directory is unsafe or unusable."""


class LockTimeout(SeqboxError):
    """``--wait-timeout`` expired before the lock was free."""

    exit_code = 75


class GitLockBusy(SeqboxError):
    """A repository's index.lock did not go away in time."""
