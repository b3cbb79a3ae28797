#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing (from
# Debian's packages; needs root), then runs the whole suite. On a fresh
# machine this is the only thing to type. Extra arguments go to `cargo test`
# (e.g. `bash shell/test.sh -- tls::` runs the TLS tests only).
#
# What the tests use: mariadbd, mariadb-install-db and mariadb (MariaDB
# servers they start themselves, with the ed25519 plugin), promtool (the
# metrics format), sysbench (a 60-second write load), ip (a network namespace
# for the failover test), openssl (the TLS tests' certificates), chromium
# (the status page, loaded in a real headless browser), prometheus (a real
# server evaluating the alert rules), schemathesis (from PyPI, in a virtual
# environment of its own: the API fuzzed against doc/openapi.yaml), Galera 4
# and rsync (the minder's real Galera cluster and its state transfers),
# HAProxy (the minder's dbclient routes a real one), curl, mariadb-backup (the
# node agent's coldbackup and coldrestore, backups to storage),
# mariadb-plugin-spider (the cluster's compute nodes), s3s-fs (from
# crates.io: a real S3 server on loopback for the backup tests).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null || missing+=(mariadb-server)
command -v mariadb-install-db >/dev/null || missing+=(mariadb-server)
[ -e /usr/lib/mysql/plugin/auth_ed25519.so ] || missing+=(mariadb-server)
command -v mariadb >/dev/null || missing+=(mariadb-client)
command -v promtool >/dev/null || missing+=(prometheus)
command -v sysbench >/dev/null || missing+=(sysbench)
command -v ip >/dev/null || missing+=(iproute2)
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -e /usr/lib/galera/libgalera_smm.so ] || missing+=(galera-4)
command -v rsync >/dev/null || missing+=(rsync)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v curl >/dev/null || missing+=(curl)
command -v mariadb-backup >/dev/null || missing+=(mariadb-backup)
# iptables: the failover test cuts the manager alone from a healthy primary.
command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || missing+=(iptables)
# The Spider engine: the cluster manager's compute nodes.
[ -e /usr/lib/mysql/plugin/ha_spider.so ] || missing+=(mariadb-plugin-spider)
if [ ${#missing[@]} -gt 0 ]; then
    # One name once, in the order found.
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "shell/test.sh: installing packages needs root; run as root or install: ${missing[*]}" >&2
        exit 2
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# A real S3 server for the backup tests: s3s-fs, pinned, built once into
# ~/.cargo/bin (about 5 minutes the first time).
S3S_FS_VERSION=0.14.1
if ! { [ -x "$HOME/.cargo/bin/s3s-fs" ] || command -v s3s-fs >/dev/null; }; then
    echo "installing s3s-fs $S3S_FS_VERSION (the backup tests' S3 server)"
    cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary
fi

# Schemathesis, pinned, in its own virtual environment (python3 -m venv).
SCHEMATHESIS_VERSION=4.32.5
venv="${CCR_SCHEMATHESIS_VENV:-$HOME/.cache/ccr-syncer/schemathesis-$SCHEMATHESIS_VERSION}"
if [ ! -x "$venv/bin/st" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
        [ "$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    fi
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
export CCR_SCHEMATHESIS="$venv/bin/st"

exec cargo test --locked --all-targets "$@"
