#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# An encrypted recording: a Matroska file encrypted as a byte stream
# (framing=stream), read back in 1000-byte chunks, decrypted, demuxed and decoded;
# the frames equal those of the same file unencrypted.
set -eu
OUT=${OUT:-$(mktemp -d)}
umask 077
echo "1 $(openssl rand -hex 16)" > "$OUT/recording.key"
SOURCE="videotestsrc num-buffers=60 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! avenc_mpeg4 ! matroskamux"
DECODE="matroskademux ! avdec_mpeg4 ! videoconvert ! video/x-raw,format=I420"

gst-launch-1.0 -q $SOURCE ! filesink location="$OUT/plain.mkv"
gst-launch-1.0 -q $SOURCE ! streamencrypt framing=stream key-file="$OUT/recording.key" \
  ! filesink location="$OUT/recording.mkv.enc"

gst-launch-1.0 -q filesrc location="$OUT/plain.mkv" ! $DECODE ! filesink location="$OUT/reference.yuv"
gst-launch-1.0 -q filesrc location="$OUT/recording.mkv.enc" blocksize=1000 \
  ! streamdecrypt framing=stream key-file="$OUT/recording.key" on-error=fail \
  ! $DECODE ! filesink location="$OUT/decrypted.yuv"

cmp "$OUT/reference.yuv" "$OUT/decrypted.yuv"
echo "file: encrypted recording of $(stat -c %s "$OUT/recording.mkv.enc") bytes decrypted and decoded, identical"
