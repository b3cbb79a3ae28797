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

# make_certs: a CA and a server certificate for 127.0.0.1 in $WORK/certs
# (EC P-256, openssl), for the --tls runs; sets CA, CERT and KEY.
make_certs() {
    local d="$WORK/certs"
    mkdir -p "$d"
    (
        cd "$d"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign -keyout ca-key.pem -out ca.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench \
            -keyout server-key.pem -out server.csr 2>/dev/null
        printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n' > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem 2>/dev/null
    )
    CA="$d/ca.pem"; CERT="$d/server.pem"; KEY="$d/server-key.pem"
}
