"""``seqbox doctor [--json]``."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from seqbox.admission import auto_budget
from seqbox.backends.facts import diagnose, memory_facts
from seqbox.state import log_dir_default, state_dir_path
from seqbox.units import format_size

if TYPE_CHECKING:
    from seqbox.records import DoctorFacts, MemoryFacts


def doctor_main(as_json: bool) -> int:
    facts = diagnose()
    facts["memory"] = memory_facts(auto_budget)
    facts["state_dir"] = state_dir_path()
    facts["log_dir"] = log_dir_default()
    if as_json:
        sys.stdout.write(json.dumps(facts, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(render(facts))
    return 0 if facts["kernel_enforced"] else 1


def memory_lines(memory: MemoryFacts) -> list[str]:
    pressure = memory["pressure"]
    total, available = format_size(memory["total_bytes"]), format_size(memory["available_bytes"])
    lines = [
        f"memory:        {total}, {available} available"
        + ("" if pressure is None else f", pressure {pressure:g}% (some avg10)")
    ]
    for cgroup in memory["enclosing"]:
        lines.append(
            f"  limited by:     {cgroup['path']}: {format_size(cgroup['limit_bytes'])}"
            f" ({format_size(cgroup['usage_bytes'])} in use)"
        )
    reserve = memory["ceiling_bytes"] - memory["budget_auto_bytes"]
    lines.append(
        f"budget auto:   {format_size(memory['budget_auto_bytes'])}"
        f" (at most {format_size(memory['ceiling_bytes'])} here, less a reserve of {format_size(reserve)})"
    )
    return lines


def render(facts: DoctorFacts) -> str:
    lines = [
        f"os:            {facts['os']} {facts['kernel']} (python {facts['python']}, uid {facts['uid']})",
        f"cgroup layout: {facts.get('cgroup_layout')}",
    ]
    if facts.get("cgroup_v1_controllers"):
        lines.append(f"  v1 controllers: {', '.join(facts.get('cgroup_v1_controllers', []))}")
    if facts.get("cgroup2_mounts"):
        lines.append(f"  cgroup2 at:     {', '.join(facts.get('cgroup2_mounts', []))}")
    if facts.get("read_only_mounts"):
        lines.append(f"  read-only:      {', '.join(facts.get('read_only_mounts', []))}")
    if "swap_devices" in facts:
        lines.append(f"  swap devices:   {facts['swap_devices']}")
    lines.append("backends:")
    for probe in facts.get("backends", []):
        mark = "yes" if probe["usable"] else "no "
        lines.append(f"  {probe['name']:<8} {mark}  {probe['reason']}")
        details = probe["details"]
        for key in ("controllers", "placement", "swap_accounting", "unified", "subreaper", "hint"):
            if key in details:
                lines.append(f"             {key}: {details[key]}")
    lines.append(f"auto picks:    {facts.get('backend')} ({facts.get('why')})")
    if "memory" in facts:
        lines += memory_lines(facts["memory"])
    lines.append(f"state dir:     {facts.get('state_dir')}")
    lines.append(f"log dir:       {facts.get('log_dir')}")
    if not facts.get("kernel_enforced"):
        fix = facts.get("hint") or (
            "run as root, or delegate a cgroup (systemd-run --user --scope -p Delegate=yes)"
        )
        lines.append(
            "note: only polling is available: limits are checked every 0.1 s, not "
            f"enforced by the kernel. To get a cgroup backend: {fix}."
        )
    return "\n".join(lines) + "\n"
