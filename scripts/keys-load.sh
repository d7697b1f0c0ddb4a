#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# Load test of the key service (README.md, "Key service"): starts
# `streamcrypt-keys serve` on loopback with a fresh issuer and master secret,
# mints a watch grant, and runs wrk against the key endpoint.
#
#   scripts/keys-load.sh [SECONDS] [CONNECTIONS] [THREADS]    (default 20 8 2)
#
# Prints requests/s, p99 latency and the errors (non-2xx answers and socket
# errors); exits non-zero if any request failed. Needs wrk (Debian: wrk).
set -eu
cd "$(dirname "$0")/.."
seconds=${1:-20}
connections=${2:-8}
threads=${3:-2}

command -v wrk >/dev/null || { echo "keys-load: wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked -p streamcrypt-keys
bin=target/release/streamcrypt-keys

work=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$bin" signing-key --out "$work/issuer.key" --public-out "$work/issuer.pub"
"$bin" master-secret --out "$work/master.secret"
# The service logs one line per request; keep them apart from the figures.
"$bin" serve --listen 127.0.0.1:0 --issuer-key "$work/issuer.pub" \
    --master-secret-file "$work/master.secret" >"$work/listening" 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do
    [ -s "$work/listening" ] && break
    sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$work/listening")
[ -n "$url" ] || { echo "keys-load: the service did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }

grant=$("$bin" grant --signing-key "$work/issuer.key" --sub load --stream room1 \
    --rights 0xab --ttl $((seconds + 600)))
kid=$(($(date +%s) / 60))

# The grant goes in the Authorization header; the Lua script also counts
# non-2xx answers in its summary.
cat >"$work/auth.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $grant"
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("keys-load: requests %d, requests/s %.0f, p50 %.2f ms, p99 %.2f ms\n",
        summary.requests, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
    io.write(string.format("keys-load: errors non-2xx %d, connect %d, read %d, write %d, timeout %d\n",
        e.status, e.connect, e.read, e.write, e.timeout))
    local failed = e.status + e.connect + e.read + e.write + e.timeout
    local f = io.open("$work/failed", "w")
    f:write(tostring(failed))
    f:close()
end
LUA

echo "keys-load: $connections connections, $threads threads, ${seconds} s against $url/v1/streams/room1/keys/$kid"
echo "keys-load: load before: $(cut -d' ' -f1-3 /proc/loadavg)"
wrk -t "$threads" -c "$connections" -d "${seconds}s" --latency -s "$work/auth.lua" \
    "$url/v1/streams/room1/keys/$kid?bits=128&format=raw" | grep -v '^  *[0-9.]*%'
echo "keys-load: load after: $(cut -d' ' -f1-3 /proc/loadavg)"
failed=$(cat "$work/failed")
if [ "$failed" != 0 ]; then
    echo "keys-load: FAILED: $failed requests failed; last log lines:" >&2
    tail -n 5 "$work/serve.log" >&2
    exit 1
fi
echo "keys-load: no failed request"
