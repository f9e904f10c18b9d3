#!/bin/sh
# Drop-in for the recipe's wait_all.sh: run a command in the project's queue and
# wait for its whole tree, with the recipe's options.
#   scripts/wait_all.sh [--timeout SEC] [--kill-signal SIG] [--retry N] [--json]
#                       [--log FILE] [--verbose] [--] CMD [ARGS...]
set -u
me=${0##*/}
usage="usage: $me [--timeout SEC] [--kill-signal SIG] [--retry N] [--json] [--log FILE] [--verbose] [--] CMD [ARGS...]"
fail() { echo "$me: $1 ($usage)" >&2; exit 125; }
# Each original argument is taken off the front and put back at the end, translated
# into seqbox's option; then "--" and the command (POSIX sh has no arrays).
n=$#
command_seen=0
while [ "$n" -gt 0 ]; do
    arg=$1
    shift
    n=$((n - 1))
    if [ "$command_seen" = 1 ]; then
        set -- "$@" "$arg"
        continue
    fi
    case $arg in
        --timeout | --kill-signal | --retry | --log)
            [ "$n" -gt 0 ] || fail "$arg needs a value"
            value=$1
            shift
            n=$((n - 1))
            [ "$arg" = --kill-signal ] && arg=--signal
            set -- "$@" "$arg" "$value"
            ;;
        --timeout=* | --retry=* | --log=*) set -- "$@" "$arg" ;;
        --kill-signal=*) set -- "$@" "--signal=${arg#*=}" ;;
        --json) set -- "$@" --json ;;
        --verbose | -v) set -- "$@" -v ;;
        -h | --help)
            echo "$usage"
            exit 0
            ;;
        --)
            [ "$n" -gt 0 ] || fail "no command given"
            command_seen=1
            set -- "$@" --
            ;;
        -*) fail "unknown option $arg" ;;
        *)
            command_seen=1
            set -- "$@" -- "$arg"
            ;;
    esac
done
[ "$command_seen" = 1 ] || fail "no command given"
command -v seqbox >/dev/null 2>&1 || { echo "$me: seqbox is not installed or not on PATH (pip install seqbox-cli)" >&2; exit 127; }
exec seqbox run "$@"
