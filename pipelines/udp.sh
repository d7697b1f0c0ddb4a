#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# A live Opus stream sent encrypted over loopback UDP (generic RTP payload), decrypted
# and decoded on the receiving side.
set -eu
OUT=${OUT:-$(mktemp -d)}
KEY=$(openssl rand -hex 16)
PORT=${PORT:-$((20000 + $$ % 20000))}
FRAMES=100

# Receiver first: it stops after $FRAMES decoded frames (or fails after 30 s).
timeout 30 gst-launch-1.0 -q udpsrc address=127.0.0.1 port=$PORT \
    caps="application/x-rtp,media=application,clock-rate=90000,encoding-name=X-GST" \
  ! rtpgstdepay ! streamdecrypt key=$KEY key-id=3 on-error=fail \
  ! opusdec ! identity eos-after=$FRAMES ! fakesink sync=false &
RECEIVER=$!
sleep 1

gst-launch-1.0 -q audiotestsrc is-live=true num-buffers=$((FRAMES + 100)) samplesperbuffer=960 \
  ! audio/x-raw,rate=48000,channels=1 ! opusenc \
  ! streamencrypt key=$KEY key-id=3 \
  ! rtpgstpay config-interval=1 ! udpsink host=127.0.0.1 port=$PORT

wait $RECEIVER
echo "udp: $FRAMES encrypted frames received over UDP, decrypted and decoded"
