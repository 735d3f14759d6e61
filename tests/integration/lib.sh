# lib.sh - what the fleet scripts share (sourced by tests/integration/*_test.sh and
# tests/bench/bench_fleet.sh, never run on its own): loopback ports picked from the pid,
# a scratch directory, the services to kill on exit, and the ok/fail tally.

# fleet_begin SALT: BASE (the first of 8 ports; SALT keeps scripts that run at the same
# time apart), FE and BE (the router's frontend and backend), TMP, PIDS (append each
# started service), passed and failed; installs fleet_cleanup on exit.
fleet_begin() {
    # 20000..31999: below Linux's ephemeral range (32768..60999), so an outgoing
    # connection's local port (a Kafka or Redis client's) never takes a test's port.
    BASE=$((20000 + (($$ + $1) % 1500) * 8))
    FE=tcp://127.0.0.1:$BASE
    BE=tcp://127.0.0.1:$((BASE + 1))
    TMP=$(mktemp -d)
    PIDS=""
    passed=0; failed=0
    # Gateways serve gRPC on 8444 by default, which scripts running side by side would
    # fight over: off unless a script asks for a port.
    export CITADEL_GATEWAY_GRPC_PORT=${CITADEL_GATEWAY_GRPC_PORT:-0}
    trap fleet_cleanup EXIT INT TERM
}

# Kills every started service, stopped ones too (a test may SIGSTOP a worker).
fleet_cleanup() {
    for p in $PIDS; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
    rm -rf "$TMP"
}

ok() { echo "ok - $1"; passed=$((passed + 1)); }
fail() { echo "FAIL - $1"; failed=$((failed + 1)); }

# start_sanitizer [ADMIN_PORT]: citadel-sanitizer listening on SAN, a unix socket in TMP
# (so that it needs no port of its own), admin on ADMIN_PORT (default: any free port), logging to
# TMP/sanitizer.log; SAN_PID is its pid. CITADEL_SANITIZER_* in the environment set
# the rest (policies, term list). A gateway reaches it with CITADEL_GATEWAY_SANITIZER=$SAN.
start_sanitizer() {
    SAN=ipc://$TMP/sanitizer.ipc
    CITADEL_SANITIZER_ENDPOINT=$SAN CITADEL_SANITIZER_ADMIN_PORT=${1:-0} "$BIN/citadel-sanitizer" >>"$TMP/sanitizer.log" 2>&1 &
    SAN_PID=$!
    PIDS="$PIDS $SAN_PID"
}
