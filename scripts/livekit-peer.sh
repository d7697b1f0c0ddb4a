#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
#
# LiveKit's own E2EE code as the other side of interop tests (tests/livekit/README.md).
#   scripts/livekit-peer.sh < request.json   one harness call: JSON request in, JSON response out
#   scripts/livekit-peer.sh --install        only install the pinned livekit-client (npm ci)
#   scripts/livekit-peer.sh --selftest       round trips through LiveKit and the layout report
# Installs tests/livekit/node_modules with `npm ci` first when it is missing or not the pinned
# version; concurrent callers wait for one install (flock). npm's output goes to stderr, so
# stdout carries only the harness's JSON.
set -eu

dir=$(CDPATH= cd -- "$(dirname -- "$0")/../tests/livekit" && pwd)

command -v node >/dev/null 2>&1 || { echo "livekit-peer: node (20 or later) is not installed" >&2; exit 127; }
command -v npm >/dev/null 2>&1 || { echo "livekit-peer: npm is not installed" >&2; exit 127; }

pinned=$(node -e 'console.log(require(process.argv[1]).dependencies["livekit-client"])' "$dir/package.json")
installed() {
    node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("none") }' \
        "$dir/node_modules/livekit-client/package.json"
}

if [ "$(installed)" != "$pinned" ]; then
    (
        flock 9
        if [ "$(installed)" != "$pinned" ]; then
            echo "livekit-peer: installing livekit-client $pinned (npm ci in $dir)" >&2
            (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
                { echo "livekit-peer: npm ci failed in $dir" >&2; exit 1; }
        fi
    ) 9>"$dir/.install.lock"
fi

case "${1:-}" in
--install) exit 0 ;;
--selftest) exec node "$dir/selftest.mjs" ;;
"") exec node "$dir/harness.mjs" ;;
*) echo "livekit-peer: unknown argument '$1' (use --install, --selftest or none)" >&2; exit 2 ;;
esac
