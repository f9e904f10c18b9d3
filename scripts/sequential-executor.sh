#!/bin/sh
# Drop-in for the recipe's sequential-executor.sh: one command at a time per project.
exec seqbox run -- "$@"
