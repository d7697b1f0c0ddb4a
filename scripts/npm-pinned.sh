#!/bin/sh
# SPDX-License-Identifier: MPL-2.0
#
# Makes sure DIR/node_modules holds PACKAGE at the version DIR/package.json pins, running
# `npm ci` in DIR when it does not (the test harnesses' npm packages: tests/livekit,
# tests/browser). Concurrent callers wait for one install (flock). npm's output goes to stderr.
#   scripts/npm-pinned.sh DIR PACKAGE
set -eu

[ $# -eq 2 ] || { echo "usage: npm-pinned.sh DIR PACKAGE" >&2; exit 2; }
dir=$1
package=$2
command -v node >/dev/null 2>&1 || { echo "npm-pinned: node (20 or later) is not installed" >&2; exit 127; }
command -v npm >/dev/null 2>&1 || { echo "npm-pinned: npm is not installed" >&2; exit 127; }

pinned=$(node -e 'console.log(require(process.argv[1]).dependencies[process.argv[2]])' \
    "$dir/package.json" "$package")
installed() {
    node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("none") }' \
        "$dir/node_modules/$package/package.json"
}

if [ "$(installed)" != "$pinned" ]; then
    (
        flock 9
        if [ "$(installed)" != "$pinned" ]; then
            echo "npm-pinned: installing $package $pinned (npm ci in $dir)" >&2
            (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
                { echo "npm-pinned: npm ci failed in $dir" >&2; exit 1; }
        fi
    ) 9>"$dir/.install.lock"
fi
