#!/bin/sh
# Drop-in for the recipe's git-safe.sh: git in the project's queue; waits up to
# 10 s for a stale .git/index.lock to go (never deletes it).
#   scripts/git-safe.sh commit -m 'message'
set -u
me=${0##*/}
command -v seqbox >/dev/null 2>&1 || { echo "$me: seqbox is not installed or not on PATH (pip install seqbox-cli)" >&2; exit 127; }
exec seqbox run -- git "$@"
