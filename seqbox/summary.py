"""The JSON summary of a run (spec section 4): ``--json``, ``--report``, the
log's last line and the Python API's result all carry these fields."""

from __future__ import annotations

import os

FIELDS = (
    "command",
    "status",
    "exit_code",
    "signal",
    "wall_s",
    "cpu_s",
    "peak_mem_bytes",
    "mem_limit_bytes",
    "procs_peak",
    "backend",
    "lock",
    "lock_wait_s",
    "attempts",
    "run_id",
    "log",
)


def build(
    *,
    command: list[str],
    status: str,
    exit_code: int,
    signal: int | None,
    wall_s: float,
    cpu_s: float | None,
    peak_mem_bytes: int | None,
    mem_limit_bytes: int | None,
    procs_peak: int,
    backend: str | None,
    lock: str | None,
    lock_wait_s: float,
    attempts: int,
    run_id: str,
    log: str | None,
) -> dict[str, object]:
    return {
        "command": list(command),
        "status": status,
        "exit_code": exit_code,
        "signal": signal,
        "wall_s": round(wall_s, 3),
        "cpu_s": None if cpu_s is None else round(cpu_s, 3),
        "peak_mem_bytes": peak_mem_bytes,
        "mem_limit_bytes": mem_limit_bytes,
        "procs_peak": procs_peak,
        "backend": backend,
        "lock": lock,
        "lock_wait_s": round(lock_wait_s, 3),
        "attempts": attempts,
        "run_id": run_id,
        "log": log,
    }


def dumps(summary: dict[str, object]) -> str:
    import json

    return json.dumps(summary, ensure_ascii=False)


def write_report(path: str, summary: dict[str, object]) -> None:
    """Write the summary to ``path`` atomically (a reader never sees half of it)."""
    from seqbox.errors import SeqboxError

    text = dumps(summary) + "\n"
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        if path.startswith("/dev/") or path.startswith("/proc/"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SeqboxError(f"cannot write the report {path}: {err.strerror}") from None
