#!/usr/bin/env bash
# Table moves under a write load (regression-test/move_bench.rs): a cluster
# of two shards and two compute nodes, a sysbench table of BENCH_ROWS
# (2000000) rows, BENCH_MOVES (5) expand_cluster moves of it back and forth
# while sysbench oltp_write_only writes through both compute nodes; beside
# it, under the same load, the data path's full sync of the same table
# between the same servers (the full-sync benchmark's rate). Prints the markdown table
# doc/benchmarks.md shows.
#
#   [BENCH_ROWS=2000000] [BENCH_MOVES=5] bash shell/bench_table_move.sh
set -euo pipefail
cd "$(dirname "$0")/.."
need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need sysbench sysbench
[ -e /usr/lib/mysql/plugin/ha_spider.so ] || { apt-get update -qq && apt-get install -y -qq mariadb-plugin-spider; }
out="$(mktemp)"
BENCH_OUT="$out" cargo test --release --test regression -- --ignored --exact \
    move_bench::table_moves_under_a_write_load --nocapture >&2
cat "$out"
rm -f "$out"
