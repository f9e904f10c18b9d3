#!/bin/sh
# Drop-in for the recipe's kill-orphans.sh: seqbox kills every run's whole tree
# itself; this removes what crashed runs left behind.
#   scripts/kill-orphans.sh
set -u
me=${0##*/}
command -v seqbox >/dev/null 2>&1 || { echo "$me: seqbox is not installed or not on PATH (pip install seqbox-cli)" >&2; exit 127; }
exec seqbox clean "$@"
