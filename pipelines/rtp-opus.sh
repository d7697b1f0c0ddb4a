#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# Opus with LiveKit's end-to-end encryption (mode=livekit: the first byte, the TOC,
# stays clear) through the stock rtpopuspay and rtpopusdepay over loopback UDP.
# RTP carries no Opus header, so the receiver's decoder neither skips the encoder's
# pre-skip (312 samples at 48 kHz) nor trims the padding at the end, as a decoder
# reading the encoder's header does: the reference is the same packets through
# rtpopuspay and rtpopusdepay without encryption and without the network. Every
# decoded sample must equal it, and past the pre-skip, the decode that reads the header.
set -eu
NAME=rtp-opus
. "$(dirname "$0")/lib/rtp-loopback.sh"
OUT=${OUT:-$(mktemp -d)}
KEY=$(openssl rand -hex 16)
PACKETS=150
SAMPLES=960
CHANNELS=2
RTP_CAPS="application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=96"

# At the sample rate, 20 ms packets go to the network encrypted, to a decoder through
# the same RTP payloading for the reference, and to a decoder as they are.
sender() {
    gst-launch-1.0 -q audiotestsrc is-live=true num-buffers=$PACKETS samplesperbuffer=$SAMPLES \
        wave=pink-noise ! audio/x-raw,rate=48000,channels=$CHANNELS ! opusenc ! tee name=encoded \
      encoded. ! queue ! rtpopuspay ! capssetter replace=true caps="$RTP_CAPS" \
      ! rtpopusdepay ! opusdec ! filesink location="$OUT/reference.raw" \
      encoded. ! queue ! opusdec ! filesink location="$OUT/with-header.raw" \
      encoded. ! queue ! streamencrypt mode=livekit key=$KEY key-id=4 \
      ! rtpopuspay ! udpsink host=127.0.0.1 port=$PORT
}

receiver() {
    exec gst-launch-1.0 -e -q udpsrc address=127.0.0.1 port=$PORT caps="$RTP_CAPS" \
      ! rtpjitterbuffer ! rtpopusdepay \
      ! streamdecrypt mode=livekit key=$KEY key-id=4 on-error=fail \
      ! opusdec ! filesink location="$OUT/decrypted.raw" buffer-mode=unbuffered
}

# opusenc sends one packet more than it got buffers: the end of its look-ahead.
check_over_loopback "$OUT/reference.raw" "$OUT/decrypted.raw" $((SAMPLES * CHANNELS * 2)) $((PACKETS + 1))
PRE_SKIP=312
[ "$(stat -c %s "$OUT/with-header.raw")" -eq $((PACKETS * SAMPLES * CHANNELS * 2)) ] ||
    fail "the decode that reads Opus's header does not hold the $PACKETS buffers sent"
cmp -i $((PRE_SKIP * CHANNELS * 2)):0 -n "$(stat -c %s "$OUT/with-header.raw")" \
    "$OUT/decrypted.raw" "$OUT/with-header.raw" ||
    fail "past the pre-skip, the decode differs from the one that reads Opus's header"
echo "rtp-opus: $((PACKETS + 1)) Opus packets (LiveKit E2EE) sent with rtpopuspay over UDP, depayloaded by rtpopusdepay, decrypted; every decoded sample equals the unencrypted decode (and, past the pre-skip, the decode reading the Opus header)"
