#!/bin/sh
# Drop-in for the recipe's safe-run.sh: run a command with the memory limit and
# timeout of the old variables (seqbox reads MEMORY_LIMIT_MB, TIMEOUT,
# KILL_TIMEOUT and CHECK_INTERVAL itself), killing the whole tree at the end.
#   MEMORY_LIMIT_MB=2048 TIMEOUT=600 scripts/safe-run.sh pytest -x
set -u
me=${0##*/}
command -v seqbox >/dev/null 2>&1 || { echo "$me: seqbox is not installed or not on PATH (pip install seqbox-cli)" >&2; exit 127; }
[ "$#" -gt 0 ] || { echo "$me: no command given (usage: $me CMD [ARGS...])" >&2; exit 125; }
exec seqbox run -- "$@"
