#!/usr/bin/env bash
# Takes the README's pictures: starts three servers with ./run.sh on ports of their own (a
# temporary config and data folder).
# docs/userpage.png, bob's page (`client --web`): alice, bob and carol each share an image; bob
# asks alice for hers (3 views), she approves, he views it once; carol asks bob for his; the
# page is photographed with headless chromium (1400×900).
# docs/dashboard.png, the dashboard: three more clients asking the cloud for the online users
# five times a second, and the dashboard; takes server 1 down for 8 s, then SIGKILLs server 3
# (`ctl 3 kill`, as the page's button does); photographs the page (1600×900, as on a
# projector). Everything it started is stopped at the end.
#   docs/screenshots.sh [DASHBOARD.png [USERPAGE.png]]     (needs chromium: apt-get install chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/dashboard.png}
userpage=${2:-docs/userpage.png}
command -v chromium >/dev/null || { echo "chromium is missing: apt-get install chromium" >&2; exit 1; }
cargo build --release -q -p server -p client

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${runsh:-}" ] && kill -TERM "$runsh" 2>/dev/null && { wait "$runsh" 2>/dev/null || true; }
    rm -rf "$tmp"
}
trap cleanup EXIT

base=$((30000 + RANDOM % 20000))
cat > "$tmp/cluster.json" <<EOF
{ "servers": [ {"id": 1, "client_addr": "127.0.0.1:$((base + 1))", "peer_addr": "127.0.0.1:$((base + 11))"},
               {"id": 2, "client_addr": "127.0.0.1:$((base + 2))", "peer_addr": "127.0.0.1:$((base + 12))"},
               {"id": 3, "client_addr": "127.0.0.1:$((base + 3))", "peer_addr": "127.0.0.1:$((base + 13))"} ],
  "data_dir": "$tmp/data" }
EOF
export CONFIG="$tmp/cluster.json" RUN_DIR="$tmp/run"
./run.sh > "$tmp/servers.log" 2>&1 &
runsh=$!
until target/release/status --config "$CONFIG" --once --wait-ms 300 2>/dev/null | grep -q "3 of 3 servers up"; do sleep 0.5; done

# A prompt fed through a fifo kept open here (`say NAME COMMAND` writes a line), printing to NAME.out.
declare -A fds
prompt() {
    local name=$1 fd; shift
    mkfifo "$tmp/$name.in"
    target/release/client --config "$CONFIG" --name "$name" --data "$tmp/u-$name" "$@" \
        < "$tmp/$name.in" > "$tmp/$name.out" 2>&1 &
    pids+=($!)
    exec {fd}>"$tmp/$name.in"
    fds[$name]=$fd
    until grep -q "^ok: signed in" "$tmp/$name.out"; do sleep 0.2; done
}
say() { echo "$2" >&"${fds[$1]}"; }
await() { until grep -q "$2" "$tmp/$1.out"; do sleep 0.2; done; }
prompt alice
prompt carol
prompt bob --web 127.0.0.1:0
say alice "encrypt images/sample-10k.jpg"; await alice "^ok: encrypted"
say carol "encrypt images/cover-512x384.png"; await carol "^ok: encrypted"
say bob "encrypt images/cover-256x256.png"; await bob "^ok: encrypted"
say bob "request alice sample-10k 3"; await alice "bob asks for"
say alice "approve 1"; await bob "received sample-10k from alice"
say bob "view alice/sample-10k"; await bob "revealed"
say carol "request bob cover-256x256 2"; await bob "carol asks for"
userurl=$(grep -o 'http://[^ ]*' "$tmp/bob.out" | head -1)
echo "bob's page: $userurl"
sleep 4
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,900 \
    --virtual-time-budget=4000 --screenshot="$userpage" "$userurl" 2>/dev/null
echo "wrote $userpage"

target/release/status --config "$CONFIG" --run-dir "$RUN_DIR" --web 127.0.0.1:0 > "$tmp/dashboard.log" 2>&1 &
pids+=($!)
until url=$(grep -so 'http://[^ ]*' "$tmp/dashboard.log"); do sleep 0.2; done
echo "dashboard: $url"

for name in dave erin frank; do
    ( while sleep 0.2; do echo peers; done ) | target/release/client --config "$CONFIG" --name "$name" \
        --data "$tmp/client-$name" > /dev/null 2>&1 &
    pids+=($!)
done
sleep 15
target/release/ctl --config "$CONFIG" 1 down 8
sleep 14
target/release/ctl --config "$CONFIG" --run-dir "$RUN_DIR" 3 kill
sleep 6
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,900 \
    --virtual-time-budget=3000 --screenshot="$out" "$url" 2>/dev/null
echo "wrote $out"
