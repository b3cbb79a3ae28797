#!/usr/bin/env bash
# The Galera minder against garbd (galera-arbitrator-4) at the third site:
# one four-node cluster over two data centres in network namespaces
# (regression-test/harness/galera.rs), a cut between the DCs under a write
# load through HAProxy's write port, BENCH_RUNS runs of each set-up in turn.
# Prints the markdown table doc/benchmarks.md shows. Needs root (namespaces).
#
#   [BENCH_RUNS=3] bash shell/bench_minder.sh
set -euo pipefail
cd "$(dirname "$0")/.."
need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need garbd galera-arbitrator-4
need haproxy haproxy
need rsync rsync
out="$(mktemp)"
BENCH_OUT="$out" cargo test --release --test regression -- --ignored --exact \
    minder_bench::minder_against_garbd --nocapture >&2
cat "$out"
rm -f "$out"
