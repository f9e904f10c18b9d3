#!/bin/sh
# Drop-in for the recipe's make-sequential.sh: make, one at a time per project.
exec seqbox run -- make "$@"
