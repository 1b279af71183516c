#!/usr/bin/env bash
# The image cloud on this machine.
#   ./run.sh demo [OPTIONS]    build (release) and play the narrated, checked classroom demo (own ports);
#                              --step: Enter before each step; --web: its dashboard too (URL printed first)
#   ./run.sh [SERVER OPTIONS]  build (release) and start every server of cluster.json in the foreground,
#                              each with the options given (--simulate-failures: taking turns going down;
#                              --slow-ms MS, --policy P: see target/release/server --help); refused
#                              while a cluster of this RUN_DIR or these addresses runs
#   ./run.sh server ID [OPTIONS]   build and run only server ID in the foreground (one machine of several)
#   ./run.sh client NAME       start a client (registers NAME on first run); pipe commands or type them
#   ./run.sh ctl ID COMMAND    operator command to a server (ID or all): down [SECONDS] | up | simulate on|off | status | kill | restart
#   ./run.sh dashboard [ADDR]  the cluster on a web page (default 127.0.0.1:7300; prints its URL with its token)
#   ./run.sh status [--once]   live table of every server: up/down, load, elections won, online users
#   ./run.sh key               print the cluster key (64 hex digits; creates the key file if missing)
#   CONFIG=other.json ./run.sh ...   use another config (RUN_DIR=DIR: where the control files are)
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

# Says why a cluster must not be started here, if one runs already: one started by ./run.sh from
# this RUN_DIR (it holds the lock, fd 9, and so do the servers it started, so a crashed script
# leaves it held only while its servers live), or servers of this config that answer.
refuse_if_running() {
    local lock="$RUN_DIR/cluster.lock" holder
    if command -v flock >/dev/null; then
        exec 9>>"$lock"
        if ! flock -n 9; then
            holder=$(cat "$lock" 2>/dev/null || true)
            echo "a cluster is already running from ./run.sh (pid ${holder:-?}; its control files: $RUN_DIR/server-*.ctl)." >&2
            echo "It is left alone and nothing was started: stop it first (Ctrl-C in its terminal), or give another cluster its own CONFIG and RUN_DIR." >&2
            exit 1
        fi
    elif [ -f "$lock" ] && holder=$(cat "$lock") && [ -n "$holder" ] && kill -0 "$holder" 2>/dev/null; then
        echo "a cluster is already running from ./run.sh (pid $holder): left alone, nothing started; stop it first (Ctrl-C in its terminal)." >&2
        exit 1
    fi
    echo $$ >"$lock"
    local up
    up=$(answering 300)
    if [ -n "$up" ]; then
        echo "servers ${up}of $CONFIG already answer (started with './run.sh server ID', or from another RUN_DIR):" >&2
        echo "a cluster is already running; it is left alone and nothing was started." >&2
        exit 1
    fi
}

# Ids of the servers of the config that answer a status probe within MS milliseconds.
answering() {
    target/release/status --config "$CONFIG" --once --wait-ms "$1" 2>/dev/null \
        | awk '$1 ~ /^[0-9]+$/ && $2 == "up" { printf "%s ", $1 }'
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
        # Lines the server logs name it already (`TIME [server ID] …`): only the others get the prefix.
        ( exec 3<>"$ctl"; echo "$BASHPID" > "$pidf"; exec target/release/server --id "$id" --config "$CONFIG" "$@" <&3 2>&1 ) \
            | ( trap '' INT; exec sed -u "/\[server $id\]/!s/^/[server $id] /" ) || true   # killed: wait for a restart
        rm -f "$pidf"
        while [ ! -e "$again" ] && [ ! -e "$RUN_DIR/stopping" ]; do sleep 0.2; done
        [ -e "$again" ] && rm -f "$again" && echo "[server $id] restarting"
    done
    rm -f "$RUN_DIR/server-$id.supervisor"
}

servers() {
    build
    mkdir -p "$RUN_DIR"
    refuse_if_running
    local ids_started
    ids_started=$(ids | tr '\n' ' ')
    rm -f "$RUN_DIR/stopping"
    for id in $ids_started; do
        supervise "$id" "$@" &
    done
    trap 'touch "$RUN_DIR/stopping"; for id in $ids_started; do kill -INT "$(cat "$RUN_DIR/server-$id.pid" 2>/dev/null)" 2>/dev/null; done; wait' INT TERM
    # Each server answers once it is bound (a probe sent before that is lost: ask again).
    local up missing tries=0
    while :; do
        up=" $(answering 500)" missing=""
        for id in $ids_started; do
            case "$up" in *" $id "*) ;; *) missing+="$id " ;; esac
        done
        tries=$((tries + 1))
        [ -n "$missing" ] && [ "$tries" -lt 10 ] || break
        sleep 0.2
    done
    if [ -z "$missing" ]; then
        echo "started servers ${ids_started}— Ctrl-C stops them all; './run.sh ctl ID down 15' takes one down"
    else
        echo "servers ${missing}do not answer (see their lines above); started: ${ids_started}— Ctrl-C stops them all" >&2
    fi
    wait
}

case "${1:-}" in
    -h | --help | help )
        awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" ;;
    "" | --* ) servers "$@" ;;
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
