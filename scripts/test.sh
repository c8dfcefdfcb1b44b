#!/usr/bin/env bash
# Runs every test of the workspace, the end-to-end tests included, against a real
# Kafka-protocol broker.
#
# Usage: scripts/test.sh [ARGS...]
#
#   ARGS go to `cargo nextest run --workspace`, or to `cargo test --workspace` where nextest is
#   not installed; for example `scripts/test.sh -p stepup-tests` or
#   `scripts/test.sh -E 'test(decisions)'`. With no ARGS the doc tests run too, because
#   nextest skips them.
#
# Steps:
#   1. Installs the broker, tansu $TANSU_VERSION from crates.io, into $STEPUP_CI_CACHE/tansu
#      when it is missing, once per cache. The build took 14 minutes without the SQLite engine
#      and 27 minutes with it on 2 cores that other builds were also using.
#   2. Starts tansu on a free loopback port with in-memory storage, waits until it accepts
#      connections, and exports STEPUP_TEST_KAFKA=127.0.0.1:PORT for the tests. tansu is
#      stopped when the script exits; when the tests fail, the end of its log is printed.
#   3. Runs the tests. The end-to-end tests (crates/stepup/tests/serve, with their harness in
#      tests/) start `stepup serve` themselves from the binary that cargo built with them.
#
# Environment:
#   STEPUP_CI_CACHE   cache directory for tansu (default ~/.cache/stepup-ci)
#   CARGO_TARGET_DIR  used as cargo always uses it; `.ci/run` points it into the cache
#
# Needs cargo and bash only. The metrics test also runs `promtool check metrics` when promtool
# is on PATH (Debian package `prometheus`).

set -euo pipefail

# Keep both in sync with TANSU_VERSION and TANSU_FEATURES in tests/src/broker.rs. `dynostore`
# gives the in-memory storage of the shared broker, `libsql` the SQLite storage that the
# broker restart test needs.
TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql
# Bounded wait for tansu to accept connections, in seconds.
TANSU_START_WAIT_S=30

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${STEPUP_CI_CACHE:-$HOME/.cache/stepup-ci}
tansu_bin=$cache/tansu/bin/tansu

log() {
    printf '==> %s\n' "$*" >&2
}

# Returns success when the installed tansu has the pinned version and the SQLite engine.
tansu_installed() {
    local version help
    version=$("$tansu_bin" --version 2>/dev/null) || return 1
    help=$("$tansu_bin" --help 2>/dev/null) || return 1
    [[ $version == *" $TANSU_VERSION"* && $help == *"Storage engines:"*libsql* ]]
}

install_tansu() {
    if tansu_installed; then
        return
    fi
    log "installing tansu $TANSU_VERSION ($TANSU_FEATURES) into $cache/tansu (15 to 30 minutes)"
    mkdir -p "$cache"
    # The install builds in its own temporary directory, not in the project's target directory.
    env -u CARGO_TARGET_DIR cargo install tansu --version "$TANSU_VERSION" --locked --force \
        --features "$TANSU_FEATURES" --root "$cache/tansu"
}

# Returns success when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

tansu_pid=
tansu_log=
port=

# Starts tansu on a random free port below Linux's ephemeral range (32768 and up), so that no
# outgoing connection uses it. Returns failure if tansu ends or does not accept connections in
# time.
start_tansu_once() {
    port=$((20000 + RANDOM % 12000))
    if port_open "$port"; then
        return 1
    fi
    local url=tcp://127.0.0.1:$port
    "$tansu_bin" broker --listener-url "$url" --advertised-listener-url "$url" \
        --storage-engine memory://tansu/ >"$tansu_log" 2>&1 </dev/null &
    tansu_pid=$!
    local deadline=$((SECONDS + TANSU_START_WAIT_S))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$tansu_pid" 2>/dev/null; then
            wait "$tansu_pid" || true
            tansu_pid=
            return 1
        fi
        if port_open "$port"; then
            return 0
        fi
        sleep 0.2
    done
    stop_tansu
    return 1
}

start_tansu() {
    tansu_log=$(mktemp -t stepup-tansu.XXXXXX.log)
    local attempt
    for attempt in 1 2 3; do
        if start_tansu_once; then
            log "tansu $TANSU_VERSION listening on 127.0.0.1:$port (log: $tansu_log)"
            return
        fi
        log "tansu did not start on port $port (attempt $attempt of 3):"
        tail -n 20 "$tansu_log" >&2 || true
    done
    log "failed to start tansu; see $tansu_log"
    exit 1
}

stop_tansu() {
    if [[ -n $tansu_pid ]]; then
        kill "$tansu_pid" 2>/dev/null || true
        wait "$tansu_pid" 2>/dev/null || true
        tansu_pid=
    fi
}

on_exit() {
    local status=$?
    stop_tansu
    if ((status != 0)) && [[ -n $tansu_log && -s $tansu_log ]]; then
        log "tests failed (exit $status); last 40 lines of the tansu log ($tansu_log):"
        tail -n 40 "$tansu_log" >&2 || true
    elif [[ -n $tansu_log ]]; then
        rm -f "$tansu_log"
    fi
    exit "$status"
}

run_tests() {
    cd "$repo"
    if cargo nextest --version >/dev/null 2>&1; then
        # Doc tests first, so that nextest's summary is the last thing printed.
        if (($# == 0)); then
            cargo test --workspace --doc
        fi
        cargo nextest run --workspace --no-fail-fast "$@"
    else
        log "cargo-nextest is not installed; running cargo test"
        cargo test --workspace --no-fail-fast "$@"
    fi
}

main() {
    install_tansu
    trap on_exit EXIT
    start_tansu
    export STEPUP_TEST_KAFKA=127.0.0.1:$port
    export STEPUP_CI_CACHE=$cache
    run_tests "$@"
}

main "$@"
