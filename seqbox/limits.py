"""Every limit a run is held to: made from the run's options, nested inside
an enclosing run's, and written into the run log's ``start`` event.

On ``seqbox run``'s start-up path: plain Python only.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.ceiling import Ceiling
    from seqbox.records import LimitsRecord
    from seqbox.runoptions import RunOptions


class Limits:
    """Every limit a run is held to. ``None`` means no limit.

    The sandbox enforces the resource limits (``mem``, ``pids``, ``cpus``, and
    ``mem_high`` where the kernel throttles); the supervisor reads the rest from
    the sandbox (``sandbox.limits``): the timeout, its signal and grace, the
    warning threshold, how often to sample.
    """

    __slots__ = (
        "ceiling",
        "cpus",
        "grace",
        "mem",
        "mem_from_enclosing",
        "mem_high",
        "pids",
        "poll_interval",
        "signal",
        "timeout",
        "warn_at",
    )

    def __init__(
        self,
        mem: int | None = None,
        mem_high: int | None = None,
        pids: int | None = None,
        cpus: float | None = None,
        *,
        warn_at: float | None = None,
        timeout: float | None = None,
        grace: float = 10.0,
        signal: int = 15,
        poll_interval: float = 0.1,
        mem_from_enclosing: bool = False,
        ceiling: Ceiling | None = None,
    ) -> None:
        self.mem = mem
        self.mem_high = mem_high
        self.pids = pids
        self.cpus = cpus
        self.warn_at = warn_at
        self.timeout = timeout
        self.grace = grace
        self.signal = signal
        self.poll_interval = poll_interval
        #: ``mem`` is an enclosing run's limit, lower than what this run asked
        #: for (see :meth:`nested_in`): a kill at it names the enclosing run's
        self.mem_from_enclosing = mem_from_enclosing
        #: with --budget on a cgroup backend: the lock's parent cgroup (seqbox/ceiling.py)
        self.ceiling = ceiling

    @property
    def notify_at(self) -> tuple[int, ...]:
        """Usages in bytes at which the supervisor wants to look (--warn-at, --mem-high)."""
        warn = int(self.warn_at * self.mem) if self.warn_at and self.mem else None
        return tuple(n for n in (warn, self.mem_high) if n)

    @classmethod
    def from_options(cls, options: RunOptions) -> Limits:
        """The limits ``seqbox run``'s options ask for."""
        return cls(
            options.mem,
            options.mem_high,
            options.pids,
            options.cpus,
            warn_at=options.warn_at,
            timeout=options.timeout,
            grace=options.grace,
            signal=options.signal,
            poll_interval=options.poll_interval,
        )

    def record(self, retry: int | None = None) -> LimitsRecord:
        """The limits as the run log records them (see :data:`seqbox.schema.LIMITS`)."""
        return {
            "mem": self.mem,
            "mem_high": self.mem_high,
            "warn_at": self.warn_at,
            "pids": self.pids,
            "cpus": self.cpus,
            "timeout": self.timeout,
            "grace": self.grace,
            "signal": self.signal,
            "retry": retry,
        }

    def nested_in(self, mem: int | None, pids: int | None) -> Limits:
        """These limits inside a run that has ``mem`` and ``pids``: never more than it."""
        nested = Limits(**{name: getattr(self, name) for name in Limits.__slots__})
        nested.mem, nested.pids = _at_most(self.mem, mem), _at_most(self.pids, pids)
        nested.ceiling = None  # a nested run lives in its parent's reservation
        if mem is not None and (self.mem is None or self.mem > mem):  # the enclosing run's limit is lower
            nested.mem_from_enclosing = True
        if nested.mem_high is not None and nested.mem is not None and nested.mem_high > nested.mem:
            nested.mem_high = None
        return nested

    def __repr__(self) -> str:
        return f"Limits(mem={self.mem}, mem_high={self.mem_high}, pids={self.pids}, cpus={self.cpus})"


def _at_most(mine: int | None, outer: int | None) -> int | None:
    if outer is None:
        return mine
    return outer if mine is None or mine > outer else mine
