"""Polling the process tree: where no cgroup can be had (macOS, BSD, Linux without delegation)."""
