#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# SM4-ECB with PKCS#7 per buffer (NERTC's GMCryptoSM4ECB style): every encrypted
# frame decrypts with `openssl enc -d -sm4-ecb`, and streamdecrypt restores the
# stream. The key is generated the way NERTC documents it.
set -eu
OUT=${OUT:-$(mktemp -d)}
KEY=$(openssl rand -hex 16)
SOURCE="videotestsrc num-buffers=20 ! video/x-raw,width=160,height=120,framerate=30/1 ! jpegenc"

# One file per frame, before and after encryption.
gst-launch-1.0 -q $SOURCE ! tee name=t \
  t. ! queue ! multifilesink location="$OUT/plain-%02d.jpg" \
  t. ! queue ! streamencrypt mode=sm4-ecb key=$KEY ! multifilesink location="$OUT/sm4-%02d.bin"

for plain in "$OUT"/plain-*.jpg; do
  n=${plain##*plain-}; n=${n%.jpg}
  openssl enc -d -sm4-ecb -K "$KEY" -in "$OUT/sm4-$n.bin" | cmp - "$plain"
done

# And back through streamdecrypt, decoding every frame.
gst-launch-1.0 -q $SOURCE ! streamencrypt mode=sm4-ecb key=$KEY \
  ! streamdecrypt mode=sm4-ecb key=$KEY on-error=fail \
  ! jpegdec ! fakesink
echo "sm4-ecb: 20 frames encrypted, each decrypted by openssl enc -sm4-ecb"
