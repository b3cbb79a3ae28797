#!/usr/bin/env bash
# Stops a ccr-syncer started by start_syncer.sh: SIGTERM, then waits for it to
# stop its jobs and exit (SIGKILL after 30 s).
#
#   shell/stop_syncer.sh [--pid-file FILE | --log-dir DIR]
set -euo pipefail

# shellcheck source=shell/syncer_paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/syncer_paths.sh"
parse_syncer_paths "$@"
if [ ${#args[@]} -gt 0 ]; then
    echo "stop_syncer.sh: unknown argument ${args[0]}" >&2
    exit 2
fi

if [ ! -s "$pid_file" ]; then
    echo "stop_syncer.sh: no pid file $pid_file; is ccr-syncer running?" >&2
    exit 1
fi
pid=$(cat "$pid_file")
if ! kill -0 "$pid" 2>/dev/null; then
    echo "stop_syncer.sh: no process $pid; removing the stale $pid_file"
    rm -f "$pid_file"
    exit 0
fi
kill -TERM "$pid"
for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pid_file"
        echo "ccr-syncer (pid $pid) stopped"
        exit 0
    fi
    sleep 0.1
done
echo "stop_syncer.sh: ccr-syncer (pid $pid) still runs after 30 s; sending SIGKILL" >&2
kill -KILL "$pid" 2>/dev/null || true
rm -f "$pid_file"
