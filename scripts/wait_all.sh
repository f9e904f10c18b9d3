#!/usr/bin/env bash
# Drop-in for the recipe's wait_all.sh:
#   wait_all.sh [--timeout SEC] [--kill-signal SIG] [--retry N] [--json] [--log FILE] [--verbose] -- CMD...
set -euo pipefail
opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout|--kill-signal|--retry|--log)
            [ $# -ge 2 ] || { echo "wait_all.sh: $1 needs a value" >&2; exit 125; }
            name=${1#--}; [ "$name" = kill-signal ] && name=signal
            opts+=("--$name" "$2"); shift 2 ;;
        --timeout=*|--retry=*|--log=*) opts+=("$1"); shift ;;
        --kill-signal=*) opts+=("--signal=${1#*=}"); shift ;;
        --json) opts+=(--json); shift ;;
        --verbose|-v) opts+=(-v); shift ;;
        --) shift; break ;;
        *) break ;;
    esac
done
exec seqbox run "${opts[@]}" -- "$@"
