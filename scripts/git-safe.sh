#!/bin/sh
# Drop-in for the recipe's git-safe.sh: git in the project's queue; waits up to
# 10 s for a stale .git/index.lock to go (never deletes it).
exec seqbox run -- git "$@"
