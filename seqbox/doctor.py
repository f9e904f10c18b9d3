"""What ``seqbox doctor`` reports: the machine, the cgroup layout, each
backend's probe, the one ``auto`` picks and why, and where state goes."""

from __future__ import annotations

from seqbox.backends import platform_facts, probe_all


def diagnose() -> dict[str, object]:
    """Every fact, as a JSON-ready dict."""
    from seqbox.state import log_dir_default, state_dir_path

    facts = platform_facts()
    probes = probe_all()
    chosen = next((p for p in probes if p.usable), None)
    facts["backends"] = [
        {"name": p.name, "usable": p.usable, "reason": p.reason, "details": p.details} for p in probes
    ]
    facts["backend"] = chosen.name if chosen else None
    if chosen is None:
        facts["why"] = "no backend is usable"
    elif chosen.name == "poll":
        rejected = "; ".join(f"{p.name}: {p.reason}" for p in probes if not p.usable)
        facts["why"] = f"no usable cgroup ({rejected}); polling with psutil"
    else:
        facts["why"] = chosen.reason
    facts["kernel_enforced"] = chosen is not None and chosen.name != "poll"
    facts["state_dir"] = state_dir_path()
    facts["log_dir"] = log_dir_default()
    return facts
