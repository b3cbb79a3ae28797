#!/usr/bin/env bash
# Incremental sync benchmark: catch-up on one sysbench oltp_write_only
# backlog by ccr-syncer and by MariaDB's own replication (SQL thread single
# threaded, and slave_parallel_threads=4 optimistic), one after the other on
# the same machine; then ccr-syncer's steady lag at a fixed source rate.
# Prints markdown for doc/benchmarks.md.
#
#   [APPLY_CONNECTIONS=n] bash shell/bench_incremental.sh [--tables 8] [--table-size 100000] [--seconds 60] [--threads 4] [--tls]
#
# --tls: source and destination get a certificate; two ccr-syncer jobs, one
# plain (tls mode disabled) and one over TLS (verify_ca on both ends), copy
# sbtest into two destination databases and are paused while the backlog is
# written; then each catches up on it alone, plain first (TLS first with
# TLS_FIRST=1). The replicas and the steady-lag part are not run.
#
# The replicas' IO threads fetch the backlog into their relay logs while it
# is written, so their catch-up is the SQL threads' apply alone; ccr-syncer
# reads the backlog from the source's binlog as it applies.
set -euo pipefail

TABLES=8
TABLE_SIZE=100000
SECONDS_LOAD=60
THREADS=4
TLS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --tls) TLS=1; shift ;;
        --tables) TABLES="$2"; shift 2 ;;
        --table-size) TABLE_SIZE="$2"; shift 2 ;;
        --seconds) SECONDS_LOAD="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
source shell/bench_common.sh sysbench
COMMON=(--innodb-buffer-pool-size=512M --innodb-log-file-size=256M --innodb-flush-log-at-trx-commit=2
        --max-allowed-packet=64M --skip-name-resolve --character-set-server=utf8mb4)

run_server() { # name port extra-args... (datadir must exist)
    local name="$1" port="$2"; shift 2
    local dir="$WORK/$name"
    mariadbd --no-defaults --user=root --datadir="$dir/data" --socket="$dir/sock" \
        --port="$port" --bind-address=127.0.0.1 --tmpdir="$dir" --log-error="$dir/err.log" \
        "${COMMON[@]}" "$@" &
    PIDS+=($!)
    printf -v "PID_$name" '%s' "$!"
    disown
    for _ in $(seq 1 150); do
        mariadb --no-defaults -S "$dir/sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && return
        sleep 0.2
    done
    echo "$name did not start" >&2; exit 1
}
sql() { local port="$1"; shift; mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot "$@"; }
now() { date +%s.%N; }
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }

# Source: prepared, then copied cold into the replicas' datadirs.
SSL=()
if [ "$TLS" = 1 ]; then
    make_certs
    SSL=(--ssl-ca="$CA" --ssl-cert="$CERT" --ssl-key="$KEY")
fi
SRC_PORT=$(free_port)
mkdir -p "$WORK/src"
mariadb-install-db --no-defaults --user=root --datadir="$WORK/src/data" --auth-root-authentication-method=normal >/dev/null 2>&1
run_server src "$SRC_PORT" --server-id=1 --log-bin="$WORK/src/binlog" --binlog-format=ROW "${SSL[@]}"
sql "$SRC_PORT" -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; CREATE DATABASE sbtest"
sysbench oltp_common --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$SRC_PORT" --mysql-user=root \
    --mysql-db=sbtest --tables="$TABLES" --table-size="$TABLE_SIZE" --threads="$THREADS" prepare >/dev/null
sql "$SRC_PORT" -e "CREATE TABLE sbtest.hb (id INT PRIMARY KEY, ts DATETIME(6)); INSERT INTO sbtest.hb VALUES (1, NOW(6))"
GTID0=$(sql "$SRC_PORT" -N -e "SELECT @@gtid_binlog_pos")
mariadb-admin --no-defaults -S "$WORK/src/sock" -uroot shutdown
sleep 1
for r in rep1 rep4; do mkdir -p "$WORK/$r"; cp -a "$WORK/src/data" "$WORK/$r/data"; done
run_server src "$SRC_PORT" --server-id=1 --log-bin="$WORK/src/binlog" --binlog-format=ROW "${SSL[@]}"
REP1_PORT=$(free_port); REP4_PORT=$(free_port); DEST_PORT=$(free_port)
run_server rep1 "$REP1_PORT" --server-id=3 --skip-slave-start --relay-log="$WORK/rep1/relay"
run_server rep4 "$REP4_PORT" --server-id=4 --skip-slave-start --relay-log="$WORK/rep4/relay"
mkdir -p "$WORK/dest"
mariadb-install-db --no-defaults --user=root --datadir="$WORK/dest/data" --auth-root-authentication-method=normal >/dev/null 2>&1
run_server dest "$DEST_PORT" --server-id=2 "${SSL[@]}"
mariadb --no-defaults -S "$WORK/dest/sock" -uroot -e \
    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION"
sql "$REP4_PORT" -e "SET GLOBAL slave_parallel_threads = 4, slave_parallel_mode = 'optimistic'"
for port in "$REP1_PORT" "$REP4_PORT"; do
    sql "$port" -e "SET GLOBAL gtid_slave_pos = '$GTID0';
        CHANGE MASTER TO master_host = '127.0.0.1', master_port = $SRC_PORT, master_user = 'root',
        master_use_gtid = slave_pos; START SLAVE IO_THREAD"
done

# ccr-syncer: full sync of sbtest, then paused while the backlog is written.
API_PORT=$(free_port)
CONF="$WORK/syncer.toml"
echo "log_level = \"${LOG_LEVEL:-info}\"" > "$CONF"
if [ -n "${APPLY_CONNECTIONS:-}" ]; then printf '[incremental]\napply_connections = %s\n' "$APPLY_CONNECTIONS" >> "$CONF"; fi
"$BIN" --config "$CONF" --port "$API_PORT" --db-dir "$WORK/meta" --log-dir "${LOG_DIR:-$WORK}" &
SYNCER=$!; PIDS+=("$SYNCER"); disown
api() { curl -sf -X POST "http://127.0.0.1:$API_PORT/$1" -d "$2"; }
until curl -sf "http://127.0.0.1:$API_PORT/version" >/dev/null; do sleep 0.1; done
create_job() { # name dest-db tls-json
    api create_ccr "{\"name\": \"$1\",
      \"src\": {\"host\": \"127.0.0.1\", \"port\": $SRC_PORT, \"user\": \"root\", \"password\": \"\", \"database\": \"sbtest\", \"tls\": $3},
      \"dest\": {\"host\": \"127.0.0.1\", \"port\": $DEST_PORT, \"user\": \"root\", \"password\": \"\", \"database\": \"$2\", \"tls\": $3}}" >/dev/null
    until api job_status "{\"name\": \"$1\"}" | grep -q DBIncrementalSync; do
        if api job_status "{\"name\": \"$1\"}" | grep -q paused; then api job_progress "{\"name\": \"$1\"}" >&2; exit 1; fi
        sleep 0.2
    done
    api pause "{\"name\": \"$1\"}" >/dev/null
}
if [ "$TLS" = 1 ]; then
    create_job bench sbtest '{"mode": "disabled"}'
    create_job bench_tls sbtest_tls "{\"mode\": \"verify_ca\", \"ca\": \"$CA\"}"
else
    create_job bench sbtest '{"mode": "preferred"}'
fi

# The backlog.
LOAD=$(sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$SRC_PORT" \
    --mysql-user=root --mysql-db=sbtest --tables="$TABLES" --table-size="$TABLE_SIZE" \
    --threads="$THREADS" --time="$SECONDS_LOAD" --report-interval=0 run)
TPS=$(echo "$LOAD" | awk '/transactions:/ {gsub(/[()]/, "", $3); print $3}')
TXNS=$(echo "$LOAD" | awk '/transactions:/ {print $2}')
TARGET=$(sql "$SRC_PORT" -N -e "SELECT @@gtid_binlog_pos")
TARGET_SEQ=${TARGET##*-}
BINLOG_MB=$(sql "$SRC_PORT" -N -e "SHOW BINARY LOGS" | awk '{s += $2} END {printf "%.0f", s / 1048576}')
# Let the replicas' IO threads finish fetching.
for port in "$REP1_PORT" "$REP4_PORT"; do
    until [ "$(sql "$port" -N -e "SELECT @@gtid_io_pos" 2>/dev/null || true)" = "$TARGET" ] \
       || sql "$port" -e "SHOW SLAVE STATUS\G" | grep -q "Read_Master_Log_Pos: $(sql "$SRC_PORT" -N -e 'SHOW MASTER STATUS' | awk '{print $2}')"; do
        sleep 0.2
    done
done

RESULTS=()
if [ "$TLS" = 1 ]; then
    catch_up() { # job label
        local t0 t1 s0 s1
        s0=$(cpu "$SYNCER")
        t0=$(now)
        api resume "{\"name\": \"$1\"}" >/dev/null
        until [ "$(api get_lag "{\"name\": \"$1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["first_commit_seq"])')" -ge "$TARGET_SEQ" ]; do
            sleep 0.05
        done
        t1=$(now)
        s1=$(cpu "$SYNCER")
        api pause "{\"name\": \"$1\"}" >/dev/null
        RESULTS+=("$2;$(echo "$t1 - $t0" | bc);$(echo "$s1 - $s0" | bc)")
    }
    if [ "${TLS_FIRST:-0}" = 1 ]; then
        catch_up bench_tls "ccr-syncer over TLS (verify_ca both ends)"
        catch_up bench "ccr-syncer plain (tls disabled)"
    else
        catch_up bench "ccr-syncer plain (tls disabled)"
        catch_up bench_tls "ccr-syncer over TLS (verify_ca both ends)"
    fi
    TABLE_LIST=$(seq -s, -f 'sbtest.sbtest%g' 1 "$TABLES")
    SUM_SRC=$(sql "$SRC_PORT" -N -e "CHECKSUM TABLE $TABLE_LIST" | awk '{print $2}' | tr '\n' ' ')
    for db in sbtest sbtest_tls; do
        [ "$(sql "$DEST_PORT" -N -e "CHECKSUM TABLE $(echo "$TABLE_LIST" | sed "s/sbtest\./$db./g")" | awk '{print $2}' | tr '\n' ' ')" = "$SUM_SRC" ] \
            || { echo "copy $db differs from the source" >&2; exit 1; }
    done
    echo
    echo "Backlog: sysbench oltp_write_only, $TABLES tables x $TABLE_SIZE rows, $THREADS threads for $SECONDS_LOAD s: $TXNS transactions ($TPS/s), $BINLOG_MB MiB of binlog; $(nproc) cores; both copies checksum-equal to the source."
    echo
    echo "| applier | catch-up seconds | transactions/s | ccr-syncer CPU seconds |"
    echo "|---|---:|---:|---:|"
    for r in "${RESULTS[@]}"; do
        IFS=';' read -r name secs cpus <<<"$r"
        printf "| %s | %.1f | %.0f | %.1f |\n" "$name" "$secs" "$(echo "$TXNS / $secs" | bc -l)" "$cpus"
    done
    exit 0
fi
read -r S0 D0 R0 <<<"$(cpu "$SYNCER") $(cpu "$PID_dest") $(cpu "$PID_src")"
T0=$(now)
api resume '{"name": "bench"}' >/dev/null
until [ "$(api get_lag '{"name": "bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["first_commit_seq"])')" -ge "$TARGET_SEQ" ]; do
    sleep 0.05
done
T1=$(now)
CCR_SECS=$(echo "$T1 - $T0" | bc)
read -r S1 D1 R1 <<<"$(cpu "$SYNCER") $(cpu "$PID_dest") $(cpu "$PID_src")"
CCR_CPU="ccr-syncer $(echo "$S1 - $S0" | bc) s, destination server $(echo "$D1 - $D0" | bc) s, source server $(echo "$R1 - $R0" | bc) s"
RESULTS+=("ccr-syncer (reads the source's binlog);$CCR_SECS;$(echo "$S1 - $S0 + $D1 - $D0 + $R1 - $R0" | bc)")
for r in "rep1:MariaDB replication, SQL thread single-threaded:$REP1_PORT" "rep4:MariaDB replication, slave_parallel_threads=4 optimistic:$REP4_PORT"; do
    IFS=':' read -r name label port <<<"$r"
    pid_var="PID_$name"
    C0=$(cpu "${!pid_var}")
    T0=$(now)
    sql "$port" -e "START SLAVE SQL_THREAD"
    until [ "$(sql "$port" -N -e "SELECT @@gtid_slave_pos")" = "$TARGET" ]; do sleep 0.05; done
    T1=$(now)
    RESULTS+=("$label;$(echo "$T1 - $T0" | bc);$(echo "$(cpu "${!pid_var}") - $C0" | bc)")
done
TABLE_LIST=$(seq -s, -f 'sbtest.sbtest%g' 1 "$TABLES")
SUM_SRC=$(sql "$SRC_PORT" -N -e "CHECKSUM TABLE $TABLE_LIST" | awk '{print $2}' | tr '\n' ' ')
for port in "$DEST_PORT" "$REP1_PORT" "$REP4_PORT"; do
    [ "$(sql "$port" -N -e "CHECKSUM TABLE $TABLE_LIST" | awk '{print $2}' | tr '\n' ' ')" = "$SUM_SRC" ] \
        || { echo "copy on port $port differs from the source" >&2; exit 1; }
done
for port in "$REP1_PORT" "$REP4_PORT"; do sql "$port" -e "STOP SLAVE"; done

# Steady lag at half the measured maximum rate: a heartbeat row written every
# 100 ms on the source; its age on the destination sampled every 100 ms.
RATE=$(echo "$TPS / 2" | bc)
sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$SRC_PORT" \
    --mysql-user=root --mysql-db=sbtest --tables="$TABLES" --table-size="$TABLE_SIZE" \
    --threads="$THREADS" --time=30 --rate="$RATE" --report-interval=0 run >/dev/null &
LOADPID=$!
( while kill -0 "$LOADPID" 2>/dev/null; do sql "$SRC_PORT" -e "UPDATE sbtest.hb SET ts = NOW(6) WHERE id = 1"; sleep 0.1; done ) &
sleep 3
: > "$WORK/lag.txt"
while kill -0 "$LOADPID" 2>/dev/null; do
    sql "$DEST_PORT" -N -e "SELECT TIMESTAMPDIFF(MICROSECOND, ts, NOW(6)) / 1000 FROM sbtest.hb" >> "$WORK/lag.txt"
    sleep 0.1
done
wait
P50=$(sort -n "$WORK/lag.txt" | awk '{a[NR]=$1} END {print a[int(NR*0.5)+1]}')
P99=$(sort -n "$WORK/lag.txt" | awk '{a[NR]=$1} END {i=int(NR*0.99)+1; if (i>NR) i=NR; print a[i]}')
SAMPLES=$(wc -l < "$WORK/lag.txt")
PEAK=$(awk '/VmHWM/ {print $2}' "/proc/$SYNCER/status")

echo
echo "Backlog: sysbench oltp_write_only, $TABLES tables x $TABLE_SIZE rows, $THREADS threads for $SECONDS_LOAD s: $TXNS transactions ($TPS/s), $BINLOG_MB MiB of binlog; $(nproc) cores; every copy checksum-equal to the source."
echo
echo "| applier | catch-up seconds | transactions/s | time vs ccr-syncer | CPU seconds |"
echo "|---|---:|---:|---:|---:|"
for r in "${RESULTS[@]}"; do
    IFS=';' read -r name secs cpus <<<"$r"
    printf "| %s | %.1f | %.0f | %.2fx | %.1f |\n" "$name" "$secs" "$(echo "$TXNS / $secs" | bc -l)" "$(echo "$secs / $CCR_SECS" | bc -l)" "$cpus"
done
echo
echo "CPU seconds: for ccr-syncer its process, the destination server and the source server (which sends the binlog): $CCR_CPU; for a replica its server."
echo "ccr-syncer apply connections: ${APPLY_CONNECTIONS:-4 (default)}."

echo
echo "Steady lag at $RATE transactions/s (half the maximum above), heartbeat age on the destination, $SAMPLES samples: p50 ${P50} ms, p99 ${P99} ms (includes up to 100 ms between heartbeats)."
echo "ccr-syncer peak RSS over the whole run: $((PEAK / 1024)) MiB."
