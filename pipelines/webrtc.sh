#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# VP8, H.264 and Opus with LiveKit's end-to-end encryption (mode=livekit) between two
# webrtcbins on loopback, in one bundled peer connection (ICE, DTLS-SRTP). gst-launch
# cannot do the signalling, so webrtc.py (PyGObject) builds both ends and exchanges
# the offer, the answer and the candidates in-process. Every decoded frame must equal
# the decode of the same frames unencrypted.
set -eu
NAME=webrtc
DIR=$(dirname "$0")
. "$DIR/lib/rtp-loopback.sh"
OUT=${OUT:-$(mktemp -d)}

# Debian's python3-gi is for /usr/bin/python3, which need not be the first on PATH.
# Its messages are shown when it fails (openh264enc prints an error line at every
# normal end of stream).
vp8_h264_opus_over_webrtc() {
    /usr/bin/python3 "$DIR/webrtc.py" vp8 h264 opus 2>"$OUT/webrtc.log" ||
        { cat "$OUT/webrtc.log" >&2; return 1; }
}

run_retrying_once_on_udp_loss vp8_h264_opus_over_webrtc
