#!/usr/bin/env bash
# Full sync benchmark: ccr-syncer against mydumper+myloader (4 threads) and
# mariadb-dump --single-transaction | mariadb, in one run, on the same data
# and servers. Prints a markdown table for doc/benchmarks.md.
#
#   bash shell/bench_full_sync.sh [--tables 8] [--table-size 250000] [--threads 4] [--chunk-rows 50000] [--tls]
#
# --tls: both servers get a certificate, and ccr-syncer's full sync runs
# four times on the same data, plain (tls mode disabled) and over TLS
# (verify_ca on both ends) in turn: plain, TLS, TLS, plain; the other tools
# are not run.
#
# Starts its own source and destination mariadbd (same settings) under a
# temporary folder, prepares the source with sysbench, and removes it all at
# the end. Needs sysbench and mydumper (installed with apt-get if missing).
set -euo pipefail

TABLES=8
TABLE_SIZE=250000
THREADS=4
CHUNK_ROWS=50000
TLS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --tls) TLS=1; shift ;;
        --tables) TABLES="$2"; shift 2 ;;
        --table-size) TABLE_SIZE="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --chunk-rows) CHUNK_ROWS="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
source shell/bench_common.sh sysbench mydumper

start_server() { # name port extra-args...
    local name="$1" port="$2"; shift 2
    local dir="$WORK/$name"
    mkdir -p "$dir"
    mariadb-install-db --no-defaults --user=root --datadir="$dir/data" \
        --auth-root-authentication-method=normal >/dev/null 2>&1
    mariadbd --no-defaults --user=root --datadir="$dir/data" --socket="$dir/sock" \
        --port="$port" --bind-address=127.0.0.1 --tmpdir="$dir" --log-error="$dir/err.log" \
        --innodb-buffer-pool-size=1G --innodb-log-file-size=512M \
        --innodb-flush-log-at-trx-commit=2 --max-allowed-packet=64M \
        --skip-name-resolve --character-set-server=utf8mb4 "$@" &
    PIDS+=($!)
    disown
    for _ in $(seq 1 100); do
        mariadb --no-defaults -S "$dir/sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.2
    done
    mariadb --no-defaults -S "$dir/sock" -uroot -e \
        "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION"
}

SSL=()
if [ "$TLS" = 1 ]; then
    make_certs
    SSL=(--ssl-ca="$CA" --ssl-cert="$CERT" --ssl-key="$KEY")
fi
SRC_PORT=$(free_port); DEST_PORT=$(free_port)
start_server src "$SRC_PORT" --server-id=1 --log-bin="$WORK/src/binlog" --binlog-format=ROW "${SSL[@]}"
start_server dest "$DEST_PORT" --server-id=2 "${SSL[@]}"
src() { mariadb --no-defaults -h127.0.0.1 -P"$SRC_PORT" -uroot "$@"; }
dest() { mariadb --no-defaults -h127.0.0.1 -P"$DEST_PORT" -uroot "$@"; }

src -e "CREATE DATABASE sbtest"
sysbench oltp_common --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$SRC_PORT" \
    --mysql-user=root --mysql-db=sbtest --tables="$TABLES" --table-size="$TABLE_SIZE" \
    --threads="$THREADS" prepare >/dev/null
src -e "ANALYZE TABLE $(seq -s, -f 'sbtest.sbtest%g' 1 "$TABLES")" >/dev/null
ROWS=$((TABLES * TABLE_SIZE))
BYTES=$(src -N -e "SELECT SUM(DATA_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest'")
TABLE_LIST=$(seq -s, -f 'sbtest%g' 1 "$TABLES")

now() { date +%s.%N; }
checksum() { # db
    local list
    list=$(echo "$TABLE_LIST" | sed "s/sbtest\([0-9]*\)/$1.sbtest\1/g")
    dest -N -e "CHECKSUM TABLE $list" | awk '{print $2}' | tr '\n' ' '
}
SOURCE_SUM=$(src -N -e "CHECKSUM TABLE $(echo "$TABLE_LIST" | sed 's/sbtest\([0-9]*\)/sbtest.sbtest\1/g')" | awk '{print $2}' | tr '\n' ' ')
RESULTS=()
record() { # name seconds peak_kb db
    local sum; sum=$(checksum "$4")
    [ "$sum" = "$SOURCE_SUM" ] || { echo "$1: copy differs from the source" >&2; exit 1; }
    RESULTS+=("$1;$2;$3")
}

# 1. ccr-syncer
ccr_copy() { # label dest-db tls-json
    local api_port; api_port=$(free_port)
    "$BIN" --config "$WORK/syncer.toml" --port "$api_port" --db-dir "$WORK/meta-$2" --log-dir "$WORK" &
    SYNCER=$!; PIDS+=("$SYNCER"); disown
    until curl -sf "http://127.0.0.1:$api_port/version" >/dev/null; do sleep 0.1; done
    T0=$(now)
    curl -sf -X POST "http://127.0.0.1:$api_port/create_ccr" -d "{\"name\": \"bench\",
      \"src\": {\"host\": \"127.0.0.1\", \"port\": $SRC_PORT, \"user\": \"root\", \"password\": \"\", \"database\": \"sbtest\", \"tls\": $3},
      \"dest\": {\"host\": \"127.0.0.1\", \"port\": $DEST_PORT, \"user\": \"root\", \"password\": \"\", \"database\": \"$2\", \"tls\": $3}}" >/dev/null
    until curl -sf -X POST "http://127.0.0.1:$api_port/job_status" -d '{"name": "bench"}' | grep -qE "DB(Tables)?IncrementalSync"; do
        if curl -sf -X POST "http://127.0.0.1:$api_port/job_status" -d '{"name": "bench"}' | grep -q paused; then
            curl -s -X POST "http://127.0.0.1:$api_port/job_progress" -d '{"name": "bench"}' >&2; exit 1
        fi
        sleep 0.05
    done
    T1=$(now)
    PEAK=$(awk '/VmHWM/ {print $2}' "/proc/$SYNCER/status")
    CPU=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$SYNCER/stat")
    kill "$SYNCER"
    record "$1" "$(echo "$T1 - $T0" | bc)" "$PEAK" "$2"
}
cat > "$WORK/syncer.toml" <<EOF
[full_sync]
connections = $THREADS
chunk_rows = $CHUNK_ROWS
EOF
if [ "$TLS" = 1 ]; then
    PLAIN='{"mode": "disabled"}'
    SECURE="{\"mode\": \"verify_ca\", \"ca\": \"$CA\"}"
    ccr_copy "ccr-syncer full sync, plain (run 1)" copy_plain1 "$PLAIN"
    ccr_copy "ccr-syncer full sync, TLS verify_ca (run 1)" copy_tls1 "$SECURE"
    ccr_copy "ccr-syncer full sync, TLS verify_ca (run 2)" copy_tls2 "$SECURE"
    ccr_copy "ccr-syncer full sync, plain (run 2)" copy_plain2 "$PLAIN"
    secs() { echo "${RESULTS[$1]}" | cut -d';' -f2; }
    PLAIN_SECS=$(echo "$(secs 0) + $(secs 3)" | bc)
    TLS_SECS=$(echo "$(secs 1) + $(secs 2)" | bc)
    echo
    echo "Data: sysbench oltp_common, $TABLES tables x $TABLE_SIZE rows ($ROWS rows, $((BYTES / 1048576)) MiB InnoDB data); $(nproc) cores; $THREADS connections, $CHUNK_ROWS-row chunks; all copies checksum-equal to the source."
    echo
    echo "| run | seconds | rows/s | peak RSS (MiB) |"
    echo "|---|---:|---:|---:|"
    for r in "${RESULTS[@]}"; do
        IFS=';' read -r name secs peak <<<"$r"
        printf "| %s | %.1f | %.0f | %.0f |\n" "$name" "$secs" "$(echo "$ROWS / $secs" | bc -l)" "$(echo "$peak / 1024" | bc -l)"
    done
    echo
    printf "TLS vs plain (sum of two runs each): %.3fx the time (%.1f s vs %.1f s).\n" \
        "$(echo "$TLS_SECS / $PLAIN_SECS" | bc -l)" "$TLS_SECS" "$PLAIN_SECS"
    exit 0
fi
ccr_copy "ccr-syncer full sync ($THREADS connections, $CHUNK_ROWS-row chunks)" copy_ccr '{"mode": "preferred"}'

# 2. mydumper + myloader
T0=$(now)
/usr/bin/time -f %M -o "$WORK/dump.rss" mydumper -h 127.0.0.1 -P "$SRC_PORT" -u root -B sbtest \
    -t "$THREADS" -o "$WORK/dump" >/dev/null 2>&1
/usr/bin/time -f %M -o "$WORK/load.rss" myloader -h 127.0.0.1 -P "$DEST_PORT" -u root -s sbtest \
    -B copy_mydumper -t "$THREADS" -d "$WORK/dump" >/dev/null 2>&1
T1=$(now)
PEAK=$(sort -n "$WORK/dump.rss" "$WORK/load.rss" | tail -1)
record "mydumper + myloader ($THREADS threads)" "$(echo "$T1 - $T0" | bc)" "$PEAK" copy_mydumper

# 3. mariadb-dump | mariadb
dest -e "CREATE DATABASE copy_dump"
T0=$(now)
/usr/bin/time -f %M -o "$WORK/mdump.rss" mariadb-dump --no-defaults -h127.0.0.1 -P"$SRC_PORT" -uroot \
    --single-transaction sbtest | /usr/bin/time -f %M -o "$WORK/mload.rss" \
    mariadb --no-defaults -h127.0.0.1 -P"$DEST_PORT" -uroot copy_dump
T1=$(now)
PEAK=$(sort -n "$WORK/mdump.rss" "$WORK/mload.rss" | tail -1)
record "mariadb-dump --single-transaction \\| mariadb" "$(echo "$T1 - $T0" | bc)" "$PEAK" copy_dump

BASE=$(echo "${RESULTS[0]}" | cut -d';' -f2)
echo
echo "ccr-syncer used $CPU s of CPU (user + system) for its full sync."
echo "Data: sysbench oltp_common, $TABLES tables x $TABLE_SIZE rows ($ROWS rows, $((BYTES / 1048576)) MiB InnoDB data); $(nproc) cores; all copies checksum-equal to the source."
echo
echo "| tool | seconds | rows/s | MiB/s | peak RSS (MiB) | time vs ccr-syncer |"
echo "|---|---:|---:|---:|---:|---:|"
for r in "${RESULTS[@]}"; do
    IFS=';' read -r name secs peak <<<"$r"
    printf "| %s | %.1f | %.0f | %.1f | %.0f | %.2fx |\n" "$name" "$secs" \
        "$(echo "$ROWS / $secs" | bc -l)" "$(echo "$BYTES / 1048576 / $secs" | bc -l)" \
        "$(echo "$peak / 1024" | bc -l)" "$(echo "$secs / $BASE" | bc -l)"
done
