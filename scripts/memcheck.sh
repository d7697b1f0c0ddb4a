#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
# valgrind memcheck over the soak scenario of tests/soak.rs, shortened:
# appsrc ! streamencrypt ! queue ! streamdecrypt ! appsink with a key rotation
# every 100 buffers from another thread (add-key, set-key, request-key,
# remove-key). Fails on any memcheck error (invalid read or write, use of an
# uninitialised value, bad free) and on any definitely lost block, except the
# entries of scripts/memcheck.supp, each of which says why it is harmless.
#
#   scripts/memcheck.sh                   # every SFrame mode, 20,000 buffers each
#   scripts/memcheck.sh sm4-gcm           # one mode
#   SOAK_BUFFERS=5000 scripts/memcheck.sh
#
# 45 to 60 seconds on the test machine once built (6 to 9 seconds per mode),
# plus about 3 minutes for the first build.
#
# Builds the test with line tables (so that valgrind sees inlined frames) in its
# own target directory, target/memcheck, not to disturb target/release.
set -eu
cd "$(dirname "$0")/.."
. scripts/setup.sh
if ! command -v valgrind >/dev/null 2>&1; then
  echo "memcheck.sh: valgrind is not installed (Debian: apt-get install valgrind)" >&2
  exit 2
fi

export CARGO_TARGET_DIR=target/memcheck CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
test_binary=$(cargo test --locked --release --test soak --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ ! -x "$test_binary" ]; then
  echo "memcheck.sh: could not build the soak test" >&2
  exit 1
fi

# GLib's slice allocator would hide our allocations from memcheck; GST_DEBUG
# off keeps the output to what memcheck says.
export SOAK_BUFFERS="${SOAK_BUFFERS:-20000}" G_SLICE=always-malloc GST_DEBUG=
# The modes whose frames carry a KID, as the scenario needs (request-key).
modes=${*:-aes-128-gcm aes-256-gcm aes-192-gcm sm4-gcm aes-128-ctr-hmac-80 aes-128-ctr-hmac-64 aes-128-ctr-hmac-32}
for mode in $modes; do
  echo "memcheck.sh: $SOAK_BUFFERS buffers in mode $mode"
  # -s lists the suppressions used, and how often.
  SOAK_MODE=$mode valgrind --tool=memcheck --error-exitcode=97 -s \
    --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
    --suppressions=scripts/memcheck.supp --num-callers=40 \
    "$test_binary" --ignored --nocapture --test-threads=1
done
echo "memcheck.sh: no errors, no leaks"
