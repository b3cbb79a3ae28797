#!/usr/bin/env bash
# Takeover time of a group of three syncers on one MariaDB store, with the
# default settings (lease 8 s, heartbeat 1 s): how long after the owner of a
# job is SIGKILLed, or frozen (SIGSTOP), another member holds the job and it
# is running again. Several runs each; prints every run and the medians.
#   bash shell/bench_takeover.sh [RUNS]      (default 5)
# One throwaway mariadbd (binlog ROW) holds the store, the source and the
# destination databases. The debug binary is used: the time is set by the
# lease, not by CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-5}"
cargo build --locked >/dev/null 2>&1 || cargo build --locked
BIN="$PWD/target/debug/ccr-syncer"
WORK="$(mktemp -d /tmp/ccr-takeover.XXXXXX)"
cleanup() {
    pkill -9 -f "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

DB_PORT=$(free_port)
mariadb-install-db --no-defaults --datadir="$WORK/data" --auth-root-authentication-method=normal >/dev/null 2>&1
mariadbd --no-defaults --datadir="$WORK/data" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --socket="$WORK/sock" --innodb-buffer-pool-size=32M --log-bin="$WORK/data/binlog" \
    --binlog-format=ROW --server-id=1 --user="$(whoami)" >"$WORK/mariadbd.log" 2>&1 &
for _ in $(seq 100); do mariadb -S "$WORK/sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
mariadb -S "$WORK/sock" -uroot -e "CREATE DATABASE shop; USE shop; CREATE TABLE shop.t (id INT AUTO_INCREMENT PRIMARY KEY, n INT);
  INSERT INTO shop.t (n) SELECT seq FROM seq_1_to_1000;"

PORTS=("$(free_port)" "$(free_port)" "$(free_port)")
start() { # start INDEX: a member on its port, its log in $WORK/mINDEX
    mkdir -p "$WORK/m$1"
    "$BIN" --db-type mysql --db-host 127.0.0.1 --db-port "$DB_PORT" --db-user root \
        --db-name ccr_group --db-tls-mode disabled --port "${PORTS[$1]}" \
        --log-dir "$WORK/m$1" >/dev/null 2>&1 &
    echo $! >"$WORK/m$1/pid"
}
for i in 0 1 2; do start $i; done

WORK="$WORK" DB_PORT="$DB_PORT" PORTS="${PORTS[*]}" BIN="$BIN" RUNS="$RUNS" python3 - <<'PYEOF'
import json, os, signal, statistics, subprocess, time, urllib.request

work, ports, runs = os.environ["WORK"], os.environ["PORTS"].split(), int(os.environ["RUNS"])

def call(port, op, body=None, timeout=3):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/{op}", data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)
    except Exception as e:
        try:
            return json.load(e)  # an HTTP error's body
        except Exception:
            return {}

def wait(what, ready, secs=60):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise SystemExit(f"{what}: not within {secs} s")

def pid(i):
    return int(open(f"{work}/m{i}/pid").read())

def start(i):
    subprocess.run(["bash", "-c", f"""
        "$BIN" --db-type mysql --db-host 127.0.0.1 --db-port $DB_PORT --db-user root \
          --db-name ccr_group --db-tls-mode disabled --port {ports[i]} \
          --log-dir {work}/m{i} >/dev/null 2>&1 & echo $! > {work}/m{i}/pid"""], check=True)

def alive(port):
    return sum(m["state"] == "alive" for m in call(port, "stat").get("members", []))

wait("three members", lambda: alive(ports[0]) == 3)
db = int(os.environ["DB_PORT"])
ep = lambda d: {"host": "127.0.0.1", "port": db, "user": "root", "password": "", "database": d}
print(call(ports[0], "create_ccr", {"name": "shop_sync", "src": ep("shop"), "dest": ep("shop_copy")}))
running = lambda p: call(p, "job_status", {"name": "shop_sync"}).get("status", {})
wait("incremental sync", lambda: running(ports[0]).get("progress_state") == "DBIncrementalSync")

def owner(port):
    return call(port, "stat").get("jobs", {}).get("owners", {}).get("shop_sync")

results = {"SIGKILL": [], "SIGSTOP": []}
for kind in ["SIGKILL", "SIGSTOP"]:
    for run in range(runs):
        wait("an owner", lambda: owner(ports[0]) is not None)
        first = owner(ports[0])
        i = [f"127.0.0.1:{p}" for p in ports].index(first)
        other = ports[(i + 1) % 3]
        t0 = time.monotonic()
        os.kill(pid(i), signal.SIGKILL if kind == "SIGKILL" else signal.SIGSTOP)
        def moved():
            o = owner(other)
            return o not in (None, first) and running(other).get("state") == "running" \
                and running(other).get("owner") == o
        wait(f"{kind} takeover", moved)
        took = time.monotonic() - t0
        results[kind].append(took)
        print(f"{kind} run {run + 1}: owner {first} -> {owner(other)} in {took:.2f} s", flush=True)
        if kind == "SIGKILL":
            start(i)
        else:
            os.kill(pid(i), signal.SIGCONT)
        wait("the member back", lambda: alive(other) == 3)
for kind, xs in results.items():
    print(f"{kind}: median {statistics.median(xs):.2f} s, min {min(xs):.2f} s, max {max(xs):.2f} s over {len(xs)} runs")
PYEOF
