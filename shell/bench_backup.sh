#!/usr/bin/env bash
# Backups and point-in-time restore against what a DBA would do by hand,
# side by side in one run (regression-test/backup_bench.rs): a cluster
# backup of BENCH_MB (1024) MB of sysbench tables to a real S3 server
# (s3s-fs on loopback) against `mariadb-backup --stream | gzip >` a file
# uploaded with boto3; the archive's lag under BENCH_TPS (2000)
# transactions a second for BENCH_LOAD_S (60) s; a cluster_restore to the
# end of that load against the restore by hand (prepare, start,
# mariadb-binlog --stop-datetime | mariadb); peak RSS. Prints the markdown
# table doc/benchmarks.md shows.
#
#   [BENCH_MB=1024] [BENCH_TPS=2000] [BENCH_LOAD_S=60] bash shell/bench_backup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need sysbench sysbench
need mariadb-backup mariadb-backup
[ -x "$HOME/.cargo/bin/s3s-fs" ] || cargo install s3s-fs --version 0.14.1 --features binary
# boto3, the standard Python S3 client, in a virtual environment of its own.
venv="${BENCH_VENV:-$HOME/.cache/ccr-syncer/boto3}"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q boto3; }
out="$(mktemp)"
BENCH_PYTHON="$venv/bin/python" BENCH_OUT="$out" cargo test --release --test regression -- --ignored --exact \
    backup_bench::backup_and_restore_against_by_hand --nocapture >&2
cat "$out"
rm -f "$out"
