#!/bin/sh
# Drop-in for the recipe's sequential-executor.sh: one command at a time per project.
#   scripts/sequential-executor.sh npm test
set -u
me=${0##*/}
command -v seqbox >/dev/null 2>&1 || { echo "$me: seqbox is not installed or not on PATH (pip install seqbox-cli)" >&2; exit 127; }
[ "$#" -gt 0 ] || { echo "$me: no command given (usage: $me CMD [ARGS...])" >&2; exit 125; }
exec seqbox run -- "$@"
