#!/usr/bin/env bash
# Takes docs/dashboard.png, the dashboard's picture in the README: starts three servers with
# ./run.sh on ports of their own (a temporary config and data folder), three clients asking
# the cloud for the online users five times a second, and the dashboard; takes server 1 down
# for 8 s, then SIGKILLs server 3 (`ctl 3 kill`, as the page's button does); photographs the page
# with headless chromium (1600×900, as on a projector) and stops everything it started.
#   docs/screenshots.sh [OUT.png]     (needs chromium: apt-get install chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/dashboard.png}
command -v chromium >/dev/null || { echo "chromium is missing: apt-get install chromium" >&2; exit 1; }
cargo build --release -q -p server -p client

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${runsh:-}" ] && kill -TERM "$runsh" 2>/dev/null && wait "$runsh" 2>/dev/null
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

target/release/status --config "$CONFIG" --run-dir "$RUN_DIR" --web 127.0.0.1:0 > "$tmp/dashboard.log" 2>&1 &
pids+=($!)
until url=$(grep -so 'http://[^ ]*' "$tmp/dashboard.log"); do sleep 0.2; done
echo "dashboard: $url"

for name in alice bob carol; do
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
