#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
#
# streamcrypt's VP8 stream (streamencrypt mode=livekit ! streamcryptrtpvp8pay ! webrtcbin) watched
# in headless Chromium, decrypted there by livekit-client's own E2EE worker (tests/browser/README.md).
#   scripts/browser-test.sh [case ...]   one JSON report on stdout; tests/browser.rs judges it
# GST_PLUGIN_PATH must lead to the plugin (target/release after `cargo build --release`).
# Installs the pinned livekit-client (tests/livekit) and playwright-core (tests/browser) with
# `npm ci` when missing (concurrent callers wait for one install). Runs the browser and the sender
# in a network namespace that has only lo when it can (root, or unprivileged user namespaces);
# elsewhere on the host network, where every address the test uses is still 127.0.0.1.
set -eu

root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
dir=$root/tests/browser
chromium=${CHROMIUM:-/usr/bin/chromium}

[ -x "$chromium" ] || { echo "browser-test: no Chromium at $chromium (Debian package chromium, or set CHROMIUM)" >&2; exit 127; }
# livekit-client is pinned in tests/livekit: the page loads its published files from there.
sh "$root/scripts/npm-pinned.sh" "$root/tests/livekit" livekit-client
sh "$root/scripts/npm-pinned.sh" "$dir" playwright-core

export CHROMIUM="$chromium"
in_namespace='ip link set lo up && exec node "$0" "$@"'
if command -v ip >/dev/null 2>&1 && unshare -n true 2>/dev/null; then
    BROWSER_TEST_NETWORK="namespace (root)" exec unshare -n sh -c "$in_namespace" "$dir/run.mjs" "$@"
elif command -v ip >/dev/null 2>&1 && unshare -r -n true 2>/dev/null; then
    BROWSER_TEST_NETWORK="namespace (user)" exec unshare -r -n sh -c "$in_namespace" "$dir/run.mjs" "$@"
else
    echo "browser-test: no network namespace here (needs root or user namespaces, and iproute2);" \
        "running on the host network, on 127.0.0.1 only" >&2
    BROWSER_TEST_NETWORK=host exec node "$dir/run.mjs" "$@"
fi
