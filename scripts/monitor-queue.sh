#!/bin/sh
# Drop-in for the recipe's monitor-queue.sh: what runs and what waits.
exec seqbox status "$@"
