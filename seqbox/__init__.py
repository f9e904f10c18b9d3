"""seqbox: run commands one at a time per project, with memory, process and
time limits on the whole process tree.

    import seqbox
    r = seqbox.run(["pytest", "-x"], mem="2G", timeout="30m")

The API is loaded lazily, so ``seqbox run`` (which imports this package) stays fast.
"""

from __future__ import annotations

from seqbox._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.api import Result, run, run_async
    from seqbox.errors import SeqboxError

__all__ = ["Result", "SeqboxError", "__version__", "run", "run_async"]


def __getattr__(name: str) -> object:
    if name in ("run", "run_async", "Result"):
        from seqbox import api

        return getattr(api, name)
    if name == "SeqboxError":
        from seqbox.errors import SeqboxError

        return SeqboxError
    raise AttributeError(f"module 'seqbox' has no attribute {name!r}")
