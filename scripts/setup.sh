#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# Installs what building and testing streamcrypt needs on Debian 12, skipping what
# is already there: the packages in scripts/debian-packages, and a Rust toolchain
# through rustup when there is no cargo. Run as root (or with sudo available).
set -eu
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=""
for package in $(grep -v '^#' scripts/debian-packages); do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing="$missing $package"
done
if [ -n "$missing" ]; then
  echo "Installing:$missing"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "No cargo: installing the Rust toolchain with rustup (https://rustup.rs)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
    --component clippy,rustfmt
  PATH="$HOME/.cargo/bin:$PATH"
fi
cargo --version
