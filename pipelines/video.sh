#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# Encoded video through streamencrypt and streamdecrypt to a decoder. Every decoded
# frame must equal the frame decoded without encryption.
set -eu
OUT=${OUT:-$(mktemp -d)}
KEY=$(openssl rand -hex 16)
SOURCE="videotestsrc num-buffers=60 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! avenc_mpeg4"
DECODE="avdec_mpeg4 ! videoconvert ! video/x-raw,format=I420"

# Reference: the same frames, not encrypted.
gst-launch-1.0 -q $SOURCE ! $DECODE ! filesink location="$OUT/reference.yuv"

gst-launch-1.0 -q $SOURCE \
  ! streamencrypt key=$KEY key-id=1 \
  ! streamdecrypt key=$KEY key-id=1 on-error=fail \
  ! $DECODE ! filesink location="$OUT/decrypted.yuv"

test "$(stat -c %s "$OUT/decrypted.yuv")" -eq $((60 * 320 * 240 * 3 / 2))
cmp "$OUT/reference.yuv" "$OUT/decrypted.yuv"
echo "video: 60 frames decrypted and decoded, identical to the unencrypted decode"
