#!/bin/sh
# Drop-in for the recipe's memory_monitor.sh: memory is watched by seqbox run
# itself (the kernel enforces it on cgroup backends); this shows current usage.
#   scripts/memory_monitor.sh [--json]
set -u
me=${0##*/}
command -v seqbox >/dev/null 2>&1 || { echo "$me: seqbox is not installed or not on PATH (pip install seqbox-cli)" >&2; exit 127; }
exec seqbox status "$@"
