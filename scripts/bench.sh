#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# Throughput and cost per buffer of every mode, side by side with the identity
# floor, gst-plugins-bad's aesenc/aesdec, the cipher core alone and `openssl speed`,
# all measured in one run on this machine (benches/throughput.rs). Arguments
# narrow it down: `scripts/bench.sh aes-128-gcm 1200`. Takes about 8 minutes in
# full; run it on an otherwise idle machine.
#
# `scripts/bench.sh scale` runs the scale benchmark instead (benches/scale.rs):
# 1, 100 and 1,000 concurrent streams in one process, and the memory a stream's
# element holds; about 2 minutes. It takes the same kind of arguments:
# `scripts/bench.sh scale sm4-gcm 1000`.
set -eu
cd "$(dirname "$0")/.."
. scripts/setup.sh
if [ "${1:-}" = scale ]; then
  shift
  cargo bench --locked --bench scale -- "$@"
else
  cargo bench --locked --bench throughput -- "$@"
fi
