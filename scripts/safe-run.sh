#!/bin/sh
# Drop-in for the recipe's safe-run.sh: run a command with the memory limit and
# timeout of the old variables (seqbox reads MEMORY_LIMIT_MB, TIMEOUT,
# KILL_TIMEOUT and CHECK_INTERVAL itself), killing the whole tree at the end.
#   MEMORY_LIMIT_MB=2048 TIMEOUT=600 scripts/safe-run.sh pytest -x
exec seqbox run -- "$@"
