# Sourced by scripts/bench-network.sh and scripts/bench-scan-json.sh: holds N loopback TCP
# sockets open with two bench_helper processes (agent/network/examples/bench_helper.rs; N/2
# accepted + N/2 connected, each process under the 20,000 open-files limit).
#
# The caller sets `work` (a scratch directory, removed on exit) before sourcing.
#
# The helpers read a FIFO this script holds open (fd 3, closed in the helpers themselves).
# Closing it is their signal to reset their connections (no TIME_WAIT left for the next step)
# and exit; it also reaches them if the script dies without running its trap. Stragglers are
# killed after 10 s.
helper_pids=()

stop_helpers() {
    # Braces: `exec 3>&- 2>/dev/null` would send the script's own stderr to /dev/null for good.
    { exec 3>&-; } 2>/dev/null || true
    for p in "${helper_pids[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    helper_pids=()
}
cleanup() {
    stop_helpers
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Waits (bounded: 60 s) for a file to appear.
wait_for() {
    for _ in $(seq 600); do
        [ -s "$1" ] && return 0
        sleep 0.1
    done
    echo "timed out waiting for $1" >&2
    return 1
}

# hold_sockets HELPER N: N loopback TCP sockets held open until `stop_helpers`.
hold_sockets() {
    local helper=$1 n=$2
    local half=$((n / 2))
    rm -f "$work/port" "$work/ready" "$work/hold-$n"
    mkfifo "$work/hold-$n"
    exec 3<>"$work/hold-$n"
    "$helper" listen "$half" "$work/port" <"$work/hold-$n" 3>&- &
    helper_pids+=($!)
    wait_for "$work/port"
    "$helper" connect "$(cat "$work/port")" "$half" "$work/ready" <"$work/hold-$n" 3>&- &
    helper_pids+=($!)
    wait_for "$work/ready"
    sleep 1
}
