#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# Interoperating with gst-plugins-bad's aesenc/aesdec: streamencrypt in an
# aes-*-cbc mode takes aesenc's place (and its property names), and each side
# decrypts the other's stream.
set -eu
OUT=${OUT:-$(mktemp -d)}
KEY=$(openssl rand -hex 32)
IV=$(openssl rand -hex 16)
AES="key=$KEY iv=$IV"
SOURCE="videotestsrc num-buffers=30 pattern=ball ! video/x-raw,width=160,height=120,framerate=30/1 ! avenc_mpeg4"
DECODE="avdec_mpeg4 ! videoconvert ! video/x-raw,format=I420"

gst-launch-1.0 -q $SOURCE ! $DECODE ! filesink location="$OUT/reference.yuv"

# aesenc -> streamdecrypt
gst-launch-1.0 -q $SOURCE ! aesenc cipher=aes-256-cbc $AES \
  ! streamdecrypt mode=aes-256-cbc $AES on-error=fail \
  ! $DECODE ! filesink location="$OUT/from-aesenc.yuv"

# streamencrypt -> aesdec
gst-launch-1.0 -q $SOURCE ! streamencrypt mode=aes-256-cbc $AES \
  ! aesdec cipher=aes-256-cbc $AES \
  ! $DECODE ! filesink location="$OUT/to-aesdec.yuv"

cmp "$OUT/reference.yuv" "$OUT/from-aesenc.yuv"
cmp "$OUT/reference.yuv" "$OUT/to-aesdec.yuv"
echo "aesenc: aesenc -> streamdecrypt and streamencrypt -> aesdec both decode all 30 frames"
