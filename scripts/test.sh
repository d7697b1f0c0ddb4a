#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# The whole test suite: formatting, lints, unit tests, Harness tests, interop with
# the sframe crate, 1,000-rotation tests, every pipeline in pipelines/ through
# gst-launch-1.0, the Rust, Python and C embedding examples, the key service
# against curl, PyJWT, ffmpeg and hlsdemux, a short pass of every fuzz target and
# a shortened valgrind memcheck of the soak scenario. Exits non-zero on any failure.
set -eu
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo fmt --all --check
# The fuzz crate has its own lock, made from the workspace's: a stale one fails
# here, in a second, rather than after the tests.
cargo fetch --locked --manifest-path fuzz/Cargo.toml
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
scripts/fuzz.sh ci
SOAK_BUFFERS=5000 sh scripts/memcheck.sh
echo "All tests passed."
