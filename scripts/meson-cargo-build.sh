#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# meson's custom_target: cargo build --release, then put the plugin where meson
# expects its output. Arguments: CARGO MANIFEST TARGET_DIR OUTPUT
set -eu
cargo=$1 manifest=$2 target_dir=$3 output=$4
"$cargo" build --release --locked --lib --manifest-path "$manifest" --target-dir "$target_dir"
cp "$target_dir/release/libgststreamcrypt.so" "$output"
