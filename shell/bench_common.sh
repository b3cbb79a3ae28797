# Shared set-up of the benchmark scripts; sourced from the repository root:
#   source shell/bench_common.sh <tool> ...
# installs the tools named if missing, builds the release binary ($BIN),
# makes a work folder ($WORK) that is removed, with every pid added to PIDS
# killed, when the script exits, and defines free_port.
for tool in "$@"; do
    if ! command -v "$tool" >/dev/null; then
        apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "$tool" >/dev/null
    fi
done
cargo build --release --locked >/dev/null 2>&1 || cargo build --release --locked
BIN="$PWD/target/release/ccr-syncer"

WORK="$(mktemp -d /tmp/ccr-bench.XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
