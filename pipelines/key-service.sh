#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# Keys from the key service: an issuer key, a master secret, the service on
# loopback with a key every 2 seconds, a grant for the publisher (publish and
# watch) and one for the viewer (watch only). The publisher encrypts 8 s of live
# video with the service's key of each period (KID = the period's index) into a
# file; the viewer decrypts it with the keys it fetches for the KIDs it meets.
# The decrypted video must be the original, frame for frame, across at least
# four key periods.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d)}
cd "$OUT"

# streamcrypt-keys: on PATH, or this checkout's build (made if missing).
keys=${STREAMCRYPT_KEYS:-}
if [ -z "$keys" ]; then
  keys=$(command -v streamcrypt-keys || echo "${CARGO_TARGET_DIR:-$root/target}/debug/streamcrypt-keys")
  [ -x "$keys" ] || cargo build -q --locked --manifest-path "$root/Cargo.toml" -p streamcrypt-keys
fi

"$keys" signing-key --out issuer.key --public-out issuer.pub
"$keys" master-secret --out master.secret
"$keys" serve --listen 127.0.0.1:0 --issuer-key issuer.pub \
  --master-secret-file master.secret --key-period 2 >serve.out 2>serve.log &
service=$!
trap 'kill $service 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q '^listening on ' serve.out && break
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' serve.out)
test -n "$url"

umask 077
"$keys" grant --signing-key issuer.key --sub alice --stream room1 --rights 0xff --ttl 3600 >publisher.grant
"$keys" grant --signing-key issuer.key --sub bob --stream room1 --rights 0xab --ttl 3600 >viewer.grant

# Publish: live video, keys from the service, a new one every 2 s.
gst-launch-1.0 -q videotestsrc is-live=true num-buffers=240 \
    ! video/x-raw,width=320,height=240,framerate=30/1 \
  ! streamencrypt key-server="$url" grant-file=publisher.grant stream-id=room1 framing=stream \
  ! filesink location=room1.sfr

# Watch: the viewer fetches the key of each KID it meets.
gst-launch-1.0 -q filesrc location=room1.sfr \
  ! streamdecrypt key-server="$url" grant-file=viewer.grant stream-id=room1 framing=stream \
  ! filesink location=decrypted.raw

gst-launch-1.0 -q videotestsrc num-buffers=240 ! video/x-raw,width=320,height=240,framerate=30/1 \
  ! filesink location=original.raw
cmp original.raw decrypted.raw

# The service's log names each request's user and KID, never a key.
periods=$(grep 'user="bob"' serve.log | grep ' 200 ' | sed -n 's/.* kid=\([0-9]*\) .*/\1/p' | sort -u | wc -l)
test "$periods" -ge 4
echo "key-service: 240 frames published and watched through the key service the viewer fetching the keys of $periods KIDs; decrypted exactly"
