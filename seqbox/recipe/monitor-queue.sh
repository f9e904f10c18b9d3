#!/bin/sh
# Drop-in for the recipe's monitor-queue.sh: what runs and what waits.
#   scripts/monitor-queue.sh [--json]
set -u
me=${0##*/}
command -v seqbox >/dev/null 2>&1 || { echo "$me: seqbox is not installed or not on PATH (pip install seqbox-cli)" >&2; exit 127; }
exec seqbox status "$@"
