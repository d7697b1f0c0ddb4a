#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# The main job in one command: encrypt a live video stream, rotate the key every
# second from application code, decrypt, and check every frame came back.
# Usage: scripts/demo.sh [seconds]
set -eu
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --release --example demo
exec target/release/examples/demo "${1:-5}"
