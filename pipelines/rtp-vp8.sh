#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# VP8 with LiveKit's end-to-end encryption (mode=livekit) as RTP over loopback UDP:
# streamcryptrtpvp8pay sends, the stock rtpvp8depay receives. (The stock rtpvp8pay
# cannot send these frames: it parses the frame's partitions, which are ciphertext, and
# stops with "Failed to parse VP8 frame" / "Could not encode stream".)
# Every decoded frame must equal the decode of the same frames unencrypted.
set -eu
NAME=rtp-vp8
. "$(dirname "$0")/lib/rtp-loopback.sh"
OUT=${OUT:-$(mktemp -d)}
KEY=$(openssl rand -hex 16)
FRAMES=90
WIDTH=320
HEIGHT=240

# At the frame rate, the frames go to the network encrypted, and to a decoder as they
# are for the reference.
sender() {
    gst-launch-1.0 -q videotestsrc is-live=true num-buffers=$FRAMES pattern=ball \
      ! video/x-raw,width=$WIDTH,height=$HEIGHT,framerate=30/1 \
      ! vp8enc keyframe-max-dist=30 ! tee name=encoded \
      encoded. ! queue ! vp8dec ! filesink location="$OUT/reference.yuv" \
      encoded. ! queue ! streamencrypt mode=livekit key=$KEY key-id=2 \
      ! streamcryptrtpvp8pay ! udpsink host=127.0.0.1 port=$PORT
}

receiver() {
    exec gst-launch-1.0 -e -q udpsrc address=127.0.0.1 port=$PORT \
        caps="application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96" \
      ! rtpjitterbuffer ! rtpvp8depay \
      ! streamdecrypt mode=livekit key=$KEY key-id=2 on-error=fail \
      ! vp8dec ! filesink location="$OUT/decrypted.yuv" buffer-mode=unbuffered
}

check_over_loopback "$OUT/reference.yuv" "$OUT/decrypted.yuv" $((WIDTH * HEIGHT * 3 / 2)) $FRAMES
echo "rtp-vp8: $FRAMES VP8 frames (LiveKit E2EE) sent with streamcryptrtpvp8pay over UDP, depayloaded by rtpvp8depay, decrypted; every decoded frame equals the unencrypted decode"
