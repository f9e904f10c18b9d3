"""``seqbox doctor [--json]``."""

from __future__ import annotations

import sys

from seqbox.doctor import diagnose


def doctor_main(as_json: bool) -> int:
    facts = diagnose()
    if as_json:
        import json

        sys.stdout.write(json.dumps(facts, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(render(facts))
    return 0 if facts["kernel_enforced"] else 1


def render(facts: dict[str, object]) -> str:
    lines = [
        f"os:            {facts['os']} {facts['kernel']} (python {facts['python']}, uid {facts['uid']})",
        f"cgroup layout: {facts.get('cgroup_layout')}",
    ]
    if facts.get("cgroup_v1_controllers"):
        lines.append(f"  v1 controllers: {', '.join(facts['cgroup_v1_controllers'])}")  # type: ignore[arg-type]
    if facts.get("cgroup2_mounts"):
        lines.append(f"  cgroup2 at:     {', '.join(facts['cgroup2_mounts'])}")  # type: ignore[arg-type]
    if facts.get("read_only_mounts"):
        lines.append(f"  read-only:      {', '.join(facts['read_only_mounts'])}")  # type: ignore[arg-type]
    if "swap_devices" in facts:
        lines.append(f"  swap devices:   {facts['swap_devices']}")
    lines.append("backends:")
    for probe in facts["backends"]:  # type: ignore[attr-defined]
        mark = "yes" if probe["usable"] else "no "
        lines.append(f"  {probe['name']:<8} {mark}  {probe['reason']}")
        details = probe["details"]
        for key in ("controllers", "placement", "swap_accounting", "unified", "subreaper"):
            if key in details:
                lines.append(f"             {key}: {details[key]}")
    lines.append(f"auto picks:    {facts['backend']} ({facts['why']})")
    lines.append(f"state dir:     {facts['state_dir']}")
    lines.append(f"log dir:       {facts['log_dir']}")
    if not facts["kernel_enforced"]:
        lines.append(
            "note: only polling is available: limits are checked every 0.1 s, not "
            "enforced by the kernel. Run as root, or delegate a cgroup "
            "(systemd-run --user --scope -p Delegate=yes), to get a cgroup backend."
        )
    return "\n".join(lines) + "\n"
