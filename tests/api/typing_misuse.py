"""Misuses of the Python API that ``mypy --strict`` must reject, one per line
marked as an error; tests/api/test_api_typing.py checks that mypy reports exactly
those lines. The lines not marked are correct uses, which must pass.

Not a test module and not checked with the rest of the code (see [tool.mypy]
exclude in pyproject.toml): it is meant to fail.
"""

from __future__ import annotations

from pathlib import Path

import seqbox


async def misuses() -> None:
    seqbox.run(["true"], memory="1G")  # error: no such option (it is mem)
    seqbox.run("true")  # error: a string is not a command list
    seqbox.run(["true"], mem=["1G"])  # error: a size is a string or bytes
    seqbox.run(["true"], mem=1.5)  # error: a size in bytes is an int
    seqbox.run(["true"], timeout=[30])  # error: a duration is a string or seconds
    seqbox.run(["true"], pids="20")  # error: a count is an int
    seqbox.run(["true"], slots=1.5)  # error: a count is an int
    seqbox.run(["true"], backend="cgroup3")  # error: not a backend name
    seqbox.run(["true"], quiet="yes")  # error: a flag is a bool
    seqbox.run(["true"], env={"A": 1})  # error: environment values are strings
    seqbox.run(["true"], capture=1)  # error: capture is a bool
    seqbox.run(["true"], json=True)  # error: capture=True is the API's --json
    seqbox.run(["true"], debug=True)  # error: not an API option
    seqbox.run(["true"], "2G")  # error: options are keywords only
    seqbox.run([1, 2])  # error: the command's words are strings
    seqbox.run(command=None)  # error: a command is required
    print(seqbox.run(["true"]).exit_cod)  # error: Result has no such field
    status: int = seqbox.run(["true"]).status  # error: status is a string
    print(status)
    await seqbox.run_async(["true"], memory="1G")  # error: no such option
    await seqbox.run_async("true")  # error: a string is not a command list
    print(seqbox.run_async(["true"]).status)  # error: a coroutine: await it


async def uses() -> None:
    r = seqbox.run(["pytest", "-x"], mem="2G", timeout="30m", capture=True)
    code: int = r.exit_code
    peak: int | None = r.peak_mem_bytes
    text: str | None = r.stderr
    seqbox.run(("make", "-j2"), mem=512 * 2**20, timeout=90.5, grace=10, signal="INT", pids=100)
    seqbox.run(["true"], cpus=1.5, retry=2, retry_on_oom=True, lock="gpu", slots=2, wait_timeout="1m")
    seqbox.run(["true"], backend="poll", log=Path("out.log"), cwd=Path("."), quiet=True, env={"A": "1"})
    seqbox.run(["true"], no_lock=True, mem_high="1G", warn_at=0.8, verbose=False, profile="ci")
    r = await seqbox.run_async(["agent", "--task", "t"], mem="1G")
    ok: bool = r.ok
    print(code, peak, text, ok)
