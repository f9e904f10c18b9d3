"""Launch N agent-like subprocesses at once, each under its own memory limit.

    python examples/agents.py [N]

Every agent runs through ``seqbox.run_async``: its whole process tree is held to
``mem``, and the agents wait in one queue of this project (lock "agents"), so a
``seqbox status`` in a terminal shows them. The last agent is greedy: it keeps
allocating until seqbox kills it, and is reported as such while the others finish.
Exit status 0 when that is what happened.
"""

from __future__ import annotations

import asyncio
import sys

import seqbox

#: an "agent": allocates (and touches) MIB mebibytes in 16 MiB steps, then answers
AGENT = """
import sys, time
name, mib = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(mib // 16):
    held.append(b"x" * (16 * 2**20))
    time.sleep(0.01)
print(f"{name} answered after using {mib} MiB")
"""

LIMIT = "256M"  # each agent's limit, for its whole process tree


async def agent(name: str, mib: int) -> tuple[str, seqbox.Result]:
    result = await seqbox.run_async(
        [sys.executable, "-c", AGENT, name, str(mib)],
        mem=LIMIT,
        timeout="2m",
        lock="agents",
        budget="auto",  # as many at once as their limits fit in this machine's (or container's) memory
        capture=True,
    )
    return name, result


async def main(count: int) -> int:
    sizes = [64] * (count - 1) + [4096]  # the last one would take 4 GiB
    runs = [agent(f"agent-{i}", mib) for i, mib in enumerate(sizes)]
    ok = True
    for name, r in await asyncio.gather(*runs):
        peak = f"{(r.peak_mem_bytes or 0) / 2**20:.0f} MiB"
        # seqbox's own line (why a run was killed, or why seqbox could not run it) is in stderr
        why = ((r.stderr or "").strip().splitlines() or ["(no reason given)"])[-1]
        if r.status == "memory":
            print(f"{name}: killed at {peak}, over its {LIMIT} limit: {why}")
        elif r.status == "ok":
            print(f"{name}: ok, exit {r.exit_code}, peak {peak}: {(r.stdout or '').strip()}")
        else:
            print(f"{name}: {r.status}, exit {r.exit_code}, peak {peak}: {why}")
        expected = "memory" if name == f"agent-{count - 1}" else "ok"
        ok = ok and r.status == expected
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)))
