#!/usr/bin/env bash
# Starts ccr-syncer in the background.
#
#   shell/start_syncer.sh [ccr-syncer flags...]
#
# Logs go to --log-dir (default: log), the process id to --pid-file (default:
# <log-dir>/ccr_syncer.pid); every other flag is passed on (ccr-syncer --help).
# The binary is $CCR_SYNCER_BIN, else target/release/ccr-syncer, else
# target/debug/ccr-syncer, else ccr-syncer on the PATH.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${CCR_SYNCER_BIN:-}
if [ -z "$bin" ]; then
    for candidate in "$top/target/release/ccr-syncer" "$top/target/debug/ccr-syncer" "$(command -v ccr-syncer || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then bin=$candidate; break; fi
    done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "start_syncer.sh: no ccr-syncer binary: run 'cargo build --release' or set CCR_SYNCER_BIN" >&2
    exit 1
fi

# shellcheck source=shell/syncer_paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/syncer_paths.sh"
parse_syncer_paths "$@"
mkdir -p "$log_dir"

if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    echo "start_syncer.sh: ccr-syncer already runs with pid $(cat "$pid_file") ($pid_file)" >&2
    exit 1
fi
rm -f "$pid_file"

nohup "$bin" --log-dir "$log_dir" --pid-file "$pid_file" "${args[@]}" \
    >>"$log_dir/ccr_syncer.out" 2>&1 </dev/null &
child=$!

# The service writes its pid file once it listens; wait for that, or its exit.
for _ in $(seq 1 100); do
    if [ -s "$pid_file" ]; then
        echo "ccr-syncer started: pid $child, logs in $log_dir, pid file $pid_file"
        exit 0
    fi
    if ! kill -0 "$child" 2>/dev/null; then
        echo "start_syncer.sh: ccr-syncer exited at start:" >&2
        tail -n 20 "$log_dir/ccr_syncer.out" >&2
        exit 1
    fi
    sleep 0.1
done
echo "start_syncer.sh: ccr-syncer (pid $child) did not write $pid_file within 10 s; see $log_dir" >&2
exit 1
