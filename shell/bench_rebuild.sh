#!/usr/bin/env bash
# Rebuilding a replica: `rebuild_node` (the streamed clone between two node
# agents: mariadb-backup --stream on the source's agent, sent over HTTP,
# SHA-256 at both ends, mbstream -x and --prepare on the target's agent,
# then the swap, start and replication) against the raw pipe a DBA would
# type on one machine (mariadb-backup --backup --stream=xbstream | mbstream
# -x into an empty directory, then --prepare), side by side in one run,
# alternating, on the same primary holding GB gigabytes. Prints each run,
# the throughput ratio and the agents' peak RSS (VmHWM).
#   bash shell/bench_rebuild.sh [GB] [ROUNDS]      (defaults 2 and 2)
set -euo pipefail
cd "$(dirname "$0")/.."
GB="${1:-2}"
ROUNDS="${2:-2}"
source shell/bench_common.sh mariadb-backup curl
# The agents' mariadbd run in process groups of their own: killed too.
trap 'pkill -9 -f "$WORK" 2>/dev/null || true; cleanup' EXIT
TOKEN=bench-agent-token
HOSTS=(127.0.0.71 127.0.0.72)
APORTS=("$(free_port)" "$(free_port)")
AGENT_PIDS=()
for i in 0 1; do
    CCR_AGENT_TOKEN=$TOKEN "$BIN" agent --host "${HOSTS[$i]}" --port "${APORTS[$i]}" \
        --state-dir "$WORK/agent$i" >"$WORK/agent$i.log" 2>&1 &
    PIDS+=($!); AGENT_PIDS+=($!)
done
MP=$(free_port)
CCR_AGENT_TOKEN=$TOKEN "$BIN" --port "$MP" --db-dir "$WORK/db" --log-dir "$WORK/m" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$MP/version" >/dev/null 2>&1 && break; sleep 0.2; done

emit() { # emit JOB_TYPE JOB_ID PARAS_JSON
    curl -s -d "{\"version\":\"1.0\",\"job_id\":\"$2\",\"job_type\":\"$1\",\"timestamp\":\"1\",\"user_name\":\"bench\",\"paras\":$3}" \
        "http://127.0.0.1:$MP/HttpService/Emit"
}
field() { python3 -c "import json,sys; v=json.load(sys.stdin); print(eval('v'+sys.argv[1]))" "$1"; }
run_job() { # run_job JOB_TYPE PARAS_JSON: waits for it; its answer
    local id; id=$(emit "$1" "" "$2" | field '["job_id"]')
    while true; do
        local a; a=$(emit get_status "$id" '{}')
        case "$(echo "$a" | field '["status"]')" in
            done) echo "$a"; return ;;
            failed) echo "$1 failed: $a" >&2; exit 1 ;;
        esac
        sleep 0.5
    done
}

for i in 0 1; do
    run_job create_machine "{\"hostaddr\":\"${HOSTS[$i]}\",\"machine_type\":\"storage\",\"port_range\":\"48000-48100\",\"rack_id\":\"1\",\"datadir\":\"$WORK/data$i\",\"logdir\":\"$WORK/data$i\",\"wal_log_dir\":\"$WORK/data$i\",\"comp_datadir\":\"$WORK/data$i\",\"total_mem\":\"8192\",\"total_cpu_cores\":\"2\",\"agent_port\":\"${APORTS[$i]}\"}" >/dev/null
done
PW=bench-admin-pw
C=$(run_job create_cluster "{\"nick_name\":\"bench\",\"ha_mode\":\"rbr\",\"shards\":\"1\",\"nodes\":\"2\",\"comps\":\"0\",\"innodb_size\":\"256\",\"max_connections\":\"50\",\"fullsync_level\":\"0\",\"admin_user\":\"clustmgr\",\"admin_password\":\"$PW\",\"storage_iplists\":[\"${HOSTS[0]}\",\"${HOSTS[1]}\"]}")
CID=$(echo "$C" | field '["attachment"]["cluster_id"]')
NAME=$(echo "$C" | field '["attachment"]["cluster_name"]')
DETAIL=$(emit get_cluster_detail "" "{\"cluster_name\":\"$NAME\"}")
node() { echo "$DETAIL" | python3 -c "import json,sys; v=json.load(sys.stdin); n=[x for x in v['attachment']['list_shard'][0]['list_node'] if x['master']==sys.argv[1]][0]; print(n['hostaddr'], n['port'])" "$1"; }
read -r PH PP <<<"$(node true)"
read -r RH RP <<<"$(node false)"
PDIR=$(ls -d "$WORK"/data*/"$PP" | while read -r d; do [ -S "$d/mysqld.sock" ] && grep -q "bind-address=$PH" "$d/my.cnf" && echo "$d"; done | head -1)
echo "primary $PH:$PP ($PDIR), replica $RH:$RP; loading $GB GB"

# GB gigabytes of ~1 KB rows on the primary, not logged (the copy is what
# is measured, not replication).
mariadb -S "$PDIR/mysqld.sock" -uroot -e "CREATE DATABASE bench; CREATE TABLE bench.t (id BIGINT PRIMARY KEY, v VARCHAR(1100))"
for b in $(seq 0 $((GB * 10 - 1))); do
    mariadb -S "$PDIR/mysqld.sock" -uroot -e "SET SESSION sql_log_bin=0; INSERT INTO bench.t SELECT $b * 100000 + seq, REPEAT(MD5($b * 100000 + seq), 31) FROM bench.seq_1_to_100000"
done
SIZE=$(du -sb "$PDIR/data" | cut -f1)
echo "primary datadir: $((SIZE / 1048576)) MB"

CNF="$WORK/raw.cnf"
printf '[client]\nuser=clustmgr\npassword=%s\n' "$PW" >"$CNF"; chmod 600 "$CNF"
raw() {
    rm -rf "$WORK/raw"; mkdir -p "$WORK/raw"
    local t0; t0=$(date +%s.%N)
    mariadb-backup --defaults-extra-file="$CNF" --backup --stream=xbstream \
        --socket="$PDIR/mysqld.sock" --datadir="$PDIR/data" --target-dir="$WORK/rawtmp" 2>"$WORK/raw.err" \
        | mbstream -x -C "$WORK/raw"
    mariadb-backup --prepare --use-memory=64M --target-dir="$WORK/raw" 2>>"$WORK/raw.err"
    python3 -c "import time; print(f'{time.time() - $t0:.1f}')"
}
rebuild() {
    local t0; t0=$(date +%s.%N)
    local a; a=$(run_job rebuild_node "{\"cluster_id\":\"$CID\",\"shard_id\":\"1\",\"rb_nodes\":[{\"hostaddr\":\"$RH\",\"port\":\"$RP\",\"need_backup\":\"0\",\"pv_limit\":\"0\"}],\"allow_pull_from_master\":\"1\",\"allow_replica_delay\":\"15\"}")
    echo "$a" | field '["attachment"]["rb_nodes"][0]["bytes"]' >"$WORK/bytes"
    python3 -c "import time; print(f'{time.time() - $t0:.1f}')"
}
RAW=(); RB=()
for r in $(seq "$ROUNDS"); do
    t=$(raw); RAW+=("$t"); echo "round $r raw pipe: $t s"
    rm -rf "$WORK/raw"
    t=$(rebuild); RB+=("$t"); BYTES=$(cat "$WORK/bytes")
    echo "round $r rebuild_node: $t s ($((BYTES / 1048576)) MB streamed)"
done
python3 - "$BYTES" "${RAW[*]}" "${RB[*]}" <<'EOF'
import sys, statistics
b = int(sys.argv[1]); raw = [float(x) for x in sys.argv[2].split()]; rb = [float(x) for x in sys.argv[3].split()]
mr, mb = statistics.median(raw), statistics.median(rb)
print(f"median: raw pipe {mr:.1f} s ({b / mr / 1048576:.0f} MB/s), rebuild_node {mb:.1f} s ({b / mb / 1048576:.0f} MB/s); throughput ratio {mr / mb:.2f}")
EOF
for i in 0 1; do
    echo "agent ${HOSTS[$i]} peak RSS: $(grep VmHWM /proc/"${AGENT_PIDS[$i]}"/status | awk '{print $2 / 1024 " MB"}')"
done
