#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# HLS with standard AES-128 encryption: H.264 and AAC cut into 2-second MPEG-TS
# segments, each AES-128-CBC with its own IV, a new random key every 2 segments,
# an #EXT-X-KEY playlist (VOD: #EXT-X-ENDLIST at the end). GStreamer's hlsdemux and
# ffmpeg then decode all 300 frames. Then the README's example, from live sources.
set -eu
OUT=${OUT:-$(mktemp -d)}
cd "$OUT"

gst-launch-1.0 -q streamcrypthlssink name=hls target-duration=2 key-rotation=2 \
    playlist-length=0 max-files=0 \
  videotestsrc num-buffers=300 ! video/x-raw,width=320,height=240,framerate=30/1 \
    ! openh264enc gop-size=30 ! h264parse ! hls.video \
  audiotestsrc num-buffers=470 samplesperbuffer=1024 ! audio/x-raw,rate=48000 \
    ! avenc_aac ! aacparse ! hls.audio 2>/dev/null

grep -q '#EXT-X-KEY:METHOD=AES-128' playlist.m3u8
grep -q '#EXT-X-ENDLIST' playlist.m3u8

# GStreamer: hlsdemux fetches the keys and decrypts; count decoded frames by size.
# Debian 12's hlsdemux rarely stalls before EOS on a good playlist (once in about
# 40 runs, under load; ffmpeg below reads the same files): a stall gets one retry.
play() {
  timeout 120 gst-launch-1.0 -q uridecodebin uri="file://$OUT/playlist.m3u8" \
    caps=video/x-raw ! videoconvert ! video/x-raw,format=I420 \
    ! filesink location=decoded.yuv
}
status=0
play || status=$?
if [ "$status" -eq 124 ]; then
  echo "hlsdemux stalled; playing again" >&2
  play
elif [ "$status" -ne 0 ]; then
  exit "$status"
fi
test "$(stat -c %s decoded.yuv)" -eq $((300 * 320 * 240 * 3 / 2))

# ffmpeg: every frame too.
frames=$(ffmpeg -v error -allowed_extensions ALL -i playlist.m3u8 -map 0:v -f framemd5 - | grep -vc '^#')
test "$frames" -eq 300
vod="$(ls segment*.ts | wc -l) encrypted segments, $(ls key*.key | wc -l) keys"

# The README's example, as written there: live sources, so it runs in real time
# (10 s) and ends after 300 frames. gst-launch reports warnings on its output: a
# run without them is part of the example working.
mkdir live
cd live
gst-launch-1.0 streamcrypthlssink name=hls target-duration=2 key-rotation=2 \
  videotestsrc is-live=true num-buffers=300 ! video/x-raw,framerate=30/1 \
    ! openh264enc gop-size=30 ! h264parse ! hls.video \
  audiotestsrc is-live=true num-buffers=470 samplesperbuffer=1024 \
    ! audio/x-raw,rate=48000 ! avenc_aac ! aacparse ! hls.audio >launch.log 2>&1
if grep -E '^(WARNING|ERROR)|CRITICAL' launch.log >&2; then
  echo "the README's example warned" >&2
  exit 1
fi
grep -q 'Got EOS' launch.log
grep -q '#EXT-X-ENDLIST' playlist.m3u8
for key in key*.key; do
  test "$(stat -c %a "$key")" = 600
done
live_frames=$(ffmpeg -v error -allowed_extensions ALL -i playlist.m3u8 -map 0:v -f framemd5 - | grep -vc '^#')
test "$live_frames" -eq 300
echo "hls: $vod, hlsdemux and ffmpeg decode all 300 frames; the README's live example: $(ls segment*.ts | wc -l) segments, $(ls key*.key | wc -l) keys (mode 0600), no warnings, ffmpeg decodes all 300 frames"
