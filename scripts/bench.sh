#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# Throughput and cost per buffer of every mode, side by side with the identity
# floor, gst-plugins-bad's aesenc/aesdec, the cipher core alone and `openssl speed`,
# all measured in one run on this machine (benches/throughput.rs). Arguments
# narrow it down: `scripts/bench.sh aes-128-gcm 1200`. Takes about 8 minutes in
# full; run it on an otherwise idle machine.
set -eu
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo bench --locked --bench throughput -- "$@"
