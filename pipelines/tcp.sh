#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# An encrypted stream over TCP on loopback: the sender serves records
# (framing=stream); the receiver reassembles them from whatever chunks TCP gives.
set -eu
OUT=${OUT:-$(mktemp -d)}
KEY=$(openssl rand -hex 16)
PORT=${PORT:-$((20000 + ($$ + 7) % 20000))}

gst-launch-1.0 -q videotestsrc is-live=true num-buffers=90 ! video/x-raw,width=160,height=120,framerate=30/1 \
  ! jpegenc ! streamencrypt framing=stream key=$KEY key-id=4 \
  ! tcpserversink host=127.0.0.1 port=$PORT &
SENDER=$!
sleep 1

timeout 30 gst-launch-1.0 -q tcpclientsrc host=127.0.0.1 port=$PORT \
  ! streamdecrypt framing=stream key=$KEY key-id=4 on-error=fail \
  ! jpegparse ! jpegdec ! identity eos-after=60 ! fakesink
kill $SENDER 2>/dev/null || true
wait $SENDER 2>/dev/null || true
echo "tcp: 60 JPEG frames received over TCP, decrypted and decoded"
