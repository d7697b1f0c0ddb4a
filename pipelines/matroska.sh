#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# Encrypted frames stored in Matroska: the container stays readable (demuxable,
# timestamps intact) while the frames are ciphertext; played back through the
# decrypter, every frame decodes as the original. Keys come from files, so they do
# not show in `ps`.
set -eu
OUT=${OUT:-$(mktemp -d)}
umask 077
echo "5 $(openssl rand -hex 16)" > "$OUT/sender.key"
cp "$OUT/sender.key" "$OUT/receiver.keys"
SOURCE="videotestsrc num-buffers=90 pattern=smpte ! video/x-raw,width=320,height=240,framerate=30/1 ! avenc_mpeg4"
DECODE="avdec_mpeg4 ! videoconvert ! video/x-raw,format=I420"

gst-launch-1.0 -q $SOURCE ! $DECODE ! filesink location="$OUT/reference.yuv"

# Record: encrypt each frame, then mux.
gst-launch-1.0 -q $SOURCE \
  ! streamencrypt key-file="$OUT/sender.key" \
  ! matroskamux ! filesink location="$OUT/encrypted.mkv"

# The container is intact: all 90 frames demux, with their timestamps.
gst-launch-1.0 -q filesrc location="$OUT/encrypted.mkv" ! matroskademux \
  ! multifilesink location="$OUT/frame-%03d.bin"
test "$(ls "$OUT" | grep -c '^frame-')" -eq 90
# ... but the frames are not the plaintext: decoding them without the key yields nothing.
# (fakesink async=false: when two elements fail during preroll, Debian 12's
# gst-launch-1.0 sometimes waits forever, about once in 50 runs.)
if gst-launch-1.0 -q filesrc location="$OUT/encrypted.mkv" ! matroskademux \
     ! streamdecrypt on-error=fail ! fakesink async=false 2>/dev/null; then
  echo "encrypted.mkv decrypted without a key" >&2; exit 1
fi

# Play back through the decrypter.
gst-launch-1.0 -q filesrc location="$OUT/encrypted.mkv" ! matroskademux \
  ! streamdecrypt key-file="$OUT/receiver.keys" on-error=fail \
  ! $DECODE ! filesink location="$OUT/decrypted.yuv"

cmp "$OUT/reference.yuv" "$OUT/decrypted.yuv"
echo "matroska: 90 encrypted frames stored, demuxed and decrypted, identical to the original"
