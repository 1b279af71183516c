#!/usr/bin/env bash
# The image cloud on this machine.
#   ./run.sh demo [OPTIONS]    build (release) and play the narrated, checked classroom demo (own ports)
#   ./run.sh                   build (release) and start every server of cluster.json in the foreground
#   ./run.sh --simulate-failures   the same, the servers taking turns going down
#   ./run.sh server ID [OPTIONS]   build and run only server ID in the foreground (one machine of several)
#   ./run.sh client NAME       start a client (registers NAME on first run); pipe commands or type them
#   ./run.sh ctl ID COMMAND    operator command to a server (ID or all): down [SECONDS] | up | simulate on|off | status | kill | restart
#   ./run.sh dashboard [ADDR]  the cluster on a web page (default 127.0.0.1:7300; prints its URL with its token)
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

# Runs server $1 (its pid in RUN_DIR/server-ID.pid), and again whenever `ctl ID restart` asks
# (RUN_DIR/server-ID.restart), until RUN_DIR/stopping appears.
supervise() {
    local id=$1 ctl="$RUN_DIR/server-$1.ctl" pidf="$RUN_DIR/server-$1.pid" again="$RUN_DIR/server-$1.restart"
    shift
    rm -f "$ctl" "$again" "$pidf" && mkfifo "$ctl"
    echo "$BASHPID" > "$RUN_DIR/server-$id.supervisor"
    while [ ! -e "$RUN_DIR/stopping" ]; do
        # The control FIFO is opened read-write so the server never sees end-of-file on it.
        ( exec 3<>"$ctl"; echo "$BASHPID" > "$pidf"; exec target/release/server --id "$id" --config "$CONFIG" "$@" <&3 2>&1 ) \
            | sed -u "s/^/[server $id] /" || true   # killed: wait for a restart
        rm -f "$pidf"
        while [ ! -e "$again" ] && [ ! -e "$RUN_DIR/stopping" ]; do sleep 0.2; done
        [ -e "$again" ] && rm -f "$again" && echo "[server $id] restarting"
    done
    rm -f "$RUN_DIR/server-$id.supervisor"
}

servers() {
    build
    mkdir -p "$RUN_DIR"
    rm -f "$RUN_DIR/stopping"
    for id in $(ids); do
        supervise "$id" "$@" &
    done
    echo "started servers $(ids | tr '\n' ' ')— Ctrl-C stops them all; './run.sh ctl ID down 15' takes one down"
    trap 'touch "$RUN_DIR/stopping"; for f in "$RUN_DIR"/server-*.pid; do [ -e "$f" ] && kill -INT "$(cat "$f")" 2>/dev/null; done; wait' INT TERM
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
        build
        exec target/release/ctl --config "$CONFIG" --run-dir "$RUN_DIR" "${@:2}" ;;
    dashboard )
        build
        exec target/release/status --config "$CONFIG" --run-dir "$RUN_DIR" --web "${2:-127.0.0.1:7300}" "${@:3}" ;;
    -h | --help | help )
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
    * ) echo "unknown command $1 (see ./run.sh --help)" >&2; exit 2 ;;
esac
