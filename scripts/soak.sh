#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# The soak test of tests/soak.rs: a million buffers through
# appsrc ! streamencrypt ! queue ! streamdecrypt ! appsink with a key rotation
# every 100 buffers from another thread; checks that none is lost, reordered or
# changed, that every key switch is seen, and that the resident memory stays
# flat after the warm-up, and prints the figures. About 6 seconds once built
# (11 on a busy machine).
#
#   scripts/soak.sh                      # 1,000,000 buffers, aes-128-gcm
#   scripts/soak.sh 5000000 sm4-gcm      # buffers, mode
set -eu
cd "$(dirname "$0")/.."
. scripts/setup.sh
export SOAK_BUFFERS="${1:-1000000}" SOAK_MODE="${2:-aes-128-gcm}"
cargo test --locked --release --test soak -- --ignored --nocapture
