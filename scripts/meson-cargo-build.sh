#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# meson's custom_target: cargo build --release of one artefact, then put it where
# meson expects its output (cargo names it as meson does: the output's file name).
# Arguments: CARGO MANIFEST TARGET_DIR OUTPUT CARGO_SELECTION...
# (e.g. `--lib` for the plugin, `-p streamcrypt-keys --bin streamcrypt-keys`).
set -eu
cargo=$1 manifest=$2 target_dir=$3 output=$4
shift 4
"$cargo" build --release --locked "$@" --manifest-path "$manifest" --target-dir "$target_dir"
cp "$target_dir/release/$(basename "$output")" "$output"
