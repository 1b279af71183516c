#!/usr/bin/env bash
# The image cloud on this machine.
#   ./run.sh demo [OPTIONS]    build (release) and play the narrated, checked classroom demo (own ports)
#   ./run.sh                   build (release) and start every server of cluster.json in the foreground
#   ./run.sh --simulate-failures   the same, the servers taking turns going down
#   ./run.sh server ID [OPTIONS]   build and run only server ID in the foreground (one machine of several)
#   ./run.sh client NAME       start a client (registers NAME on first run); pipe commands or type them
#   ./run.sh ctl ID COMMAND    send an operator command to a running server: down [SECONDS] | up | simulate on|off | status
#   ./run.sh status [--once]   live table of every server: up/down, load, elections won, online users
#   ./run.sh key               print the cluster key (64 hex digits; creates the key file if missing)
#   CONFIG=other.json ./run.sh ...   use another config
set -euo pipefail
cd "$(dirname "$0")"
CONFIG=${CONFIG:-cluster.json}
RUN_DIR=${RUN_DIR:-data/run}

build() {
    cargo build --release -q -p server -p client
}

ids() {
    grep -o '"id"[[:space:]]*:[[:space:]]*[0-9]*' "$CONFIG" | grep -o '[0-9]*$'
}

servers() {
    build
    mkdir -p "$RUN_DIR"
    local pids=()
    for id in $(ids); do
        local ctl="$RUN_DIR/server-$id.ctl"
        rm -f "$ctl" && mkfifo "$ctl"
        # The control FIFO is opened read-write so the server never sees end-of-file on it.
        ( exec 3<>"$ctl"; exec target/release/server --id "$id" --config "$CONFIG" "$@" <&3 2>&1 ) \
            | sed -u "s/^/[server $id] /" &
        pids+=($!)
    done
    echo "started servers $(ids | tr '\n' ' ')— Ctrl-C stops them all; './run.sh ctl ID down 15' takes one down"
    trap 'kill -INT ${pids[*]} 2>/dev/null; wait' INT TERM
    wait
}

case "${1:-}" in
    "" ) servers ;;
    --simulate-failures ) servers --simulate-failures ;;
    demo )
        build
        exec target/release/demo "${@:2}" ;;
    server )
        [ $# -ge 2 ] || { echo "usage: ./run.sh server ID [OPTIONS]" >&2; exit 2; }
        build
        exec target/release/server --id "$2" --config "$CONFIG" "${@:3}" ;;
    key )
        build
        exec target/release/server --config "$CONFIG" --print-key "${@:2}" ;;
    status )
        build
        exec target/release/status --config "$CONFIG" "${@:2}" ;;
    client )
        [ $# -ge 2 ] || { echo "usage: ./run.sh client NAME" >&2; exit 2; }
        build
        exec target/release/client --config "$CONFIG" --name "$2" "${@:3}" ;;
    ctl )
        [ $# -ge 3 ] || { echo "usage: ./run.sh ctl ID down [SECONDS] | up | simulate on|off | status" >&2; exit 2; }
        ctl="$RUN_DIR/server-$2.ctl"
        [ -p "$ctl" ] || { echo "server $2 is not running from ./run.sh" >&2; exit 1; }
        echo "${@:3}" > "$ctl" ;;
    -h | --help | help )
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
    * ) echo "unknown command $1 (see ./run.sh --help)" >&2; exit 2 ;;
esac
