#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# Opus audio through AES-256 SFrame encryption and back, decoded; the samples must
# equal those decoded without encryption.
set -eu
OUT=${OUT:-$(mktemp -d)}
KEY=$(openssl rand -hex 32)
SOURCE="audiotestsrc num-buffers=100 samplesperbuffer=960 wave=ticks ! audio/x-raw,rate=48000,channels=2 ! opusenc"
DECODE="opusdec ! audio/x-raw,format=S16LE,rate=48000,channels=2"

gst-launch-1.0 -q $SOURCE ! $DECODE ! filesink location="$OUT/reference.raw"

gst-launch-1.0 -q $SOURCE \
  ! streamencrypt mode=aes-256-gcm key=$KEY key-id=7 \
  ! streamdecrypt mode=aes-256-gcm key=$KEY key-id=7 on-error=fail \
  ! $DECODE ! filesink location="$OUT/decrypted.raw"

test "$(stat -c %s "$OUT/decrypted.raw")" -gt 0
cmp "$OUT/reference.raw" "$OUT/decrypted.raw"
echo "audio: $(($(stat -c %s "$OUT/decrypted.raw") / 4)) samples decrypted, identical to the unencrypted decode"
