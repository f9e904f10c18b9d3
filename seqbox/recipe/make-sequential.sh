#!/bin/sh
# Drop-in for the recipe's make-sequential.sh: make, one at a time per project.
#   scripts/make-sequential.sh -j4 all
set -u
me=${0##*/}
command -v seqbox >/dev/null 2>&1 || { echo "$me: seqbox is not installed or not on PATH (pip install seqbox-cli)" >&2; exit 127; }
exec seqbox run -- make "$@"
