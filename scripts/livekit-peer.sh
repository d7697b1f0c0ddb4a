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

sh "$(dirname -- "$0")/npm-pinned.sh" "$dir" livekit-client

case "${1:-}" in
--install) exit 0 ;;
--selftest) exec node "$dir/selftest.mjs" ;;
"") exec node "$dir/harness.mjs" ;;
*) echo "livekit-peer: unknown argument '$1' (use --install, --selftest or none)" >&2; exit 2 ;;
esac
