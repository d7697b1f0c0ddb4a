#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# H.264 with LiveKit's end-to-end encryption (mode=livekit) through the stock
# rtph264pay and rtph264depay over loopback UDP. Each access unit stays clear up to its
# first slice's header; the rest is AES-GCM ciphertext, escaped so that no start code
# appears in it, so the payloaders see well-formed NAL units. What must hold for the
# clear part, which is authenticated, to arrive unchanged:
# - key-id other than 0: the frame ends with the key index, and rtph264pay drops
#   trailing zero bytes of a NAL unit (they are not part of it in H.264), so key
#   index 0 arrives without its last byte and no frame opens;
# - rtph264pay config-interval=0 (the default): with SPS/PPS inserted before every
#   IDR, the IDR frames no longer authenticate; likewise sprop-parameter-sets in the
#   receiver's caps make rtph264depay put SPS/PPS before the first frame.
# The decrypted frames decode to exactly the frames of the unencrypted stream.
set -eu
NAME=rtp-h264
. "$(dirname "$0")/lib/rtp-loopback.sh"
OUT=${OUT:-$(mktemp -d)}
KEY=$(openssl rand -hex 16)
FRAMES=90
WIDTH=320
HEIGHT=240
ACCESS_UNITS="video/x-h264,stream-format=byte-stream,alignment=au"

# At the frame rate, the access units go to the network encrypted, and to a decoder
# as they are for the reference.
sender() {
    gst-launch-1.0 -q videotestsrc is-live=true num-buffers=$FRAMES pattern=ball \
      ! video/x-raw,width=$WIDTH,height=$HEIGHT,framerate=30/1 \
      ! openh264enc gop-size=30 ! h264parse ! $ACCESS_UNITS ! tee name=encoded \
      encoded. ! queue ! avdec_h264 ! filesink location="$OUT/reference.yuv" \
      encoded. ! queue ! streamencrypt mode=livekit key=$KEY key-id=1 \
      ! rtph264pay ! udpsink host=127.0.0.1 port=$PORT
}

receiver() {
    exec gst-launch-1.0 -e -q udpsrc address=127.0.0.1 port=$PORT \
        caps="application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=96" \
      ! rtpjitterbuffer ! rtph264depay ! $ACCESS_UNITS \
      ! streamdecrypt mode=livekit key=$KEY key-id=1 on-error=fail \
      ! h264parse ! avdec_h264 ! filesink location="$OUT/decrypted.yuv" buffer-mode=unbuffered
}

check_over_loopback "$OUT/reference.yuv" "$OUT/decrypted.yuv" $((WIDTH * HEIGHT * 3 / 2)) $FRAMES
echo "rtp-h264: $FRAMES H.264 frames (LiveKit E2EE) sent with rtph264pay over UDP, depayloaded by rtph264depay, decrypted; every decoded frame equals the unencrypted decode"
