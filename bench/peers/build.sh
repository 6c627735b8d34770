#!/usr/bin/env bash
# Builds the three benchmark peers (see README.md beside this script). Safe to run again: cargo
# rebuilds only what changed and `npm ci` reinstalls exactly what package-lock.json pins.
#
#   bench/peers/build.sh            build all three
#   bench/peers/build.sh NAME...    build only the named peers (fastwebsockets, tokio-tungstenite, ws-node)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
all=(fastwebsockets tokio-tungstenite ws-node)
peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=("${all[@]}")

die() {
    echo "build.sh: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH (needed for $2)"
}

build_rust() {
    local name="$1"
    need cargo "$name"
    echo "build.sh: $name: cargo build --release --locked"
    (cd "$here/$name" && cargo build --release --locked) ||
        die "$name: cargo build failed (see the cargo output above)"
    local bin="$here/$name/target/release/peer-$name"
    [ -x "$bin" ] || die "$name: build finished but $bin is missing"
    echo "build.sh: $name: ok -> $bin"
}

build_node() {
    need node ws-node
    need npm ws-node
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    [ "$major" -ge 20 ] || die "ws-node: needs node >= 20, found $(node --version)"
    echo "build.sh: ws-node: npm ci"
    (cd "$here/ws-node" && npm ci --no-audit --no-fund) ||
        die "ws-node: npm ci failed (see the npm output above)"
    (cd "$here/ws-node" && node -e 'require("ws")') || die "ws-node: the ws package does not load"
    # bufferutil is optional: ws falls back to JavaScript masking without it.
    local native
    native="$(cd "$here/ws-node" && node -e '
        try { require("node-gyp-build").path(require("path").dirname(require.resolve("bufferutil"))); console.log("native bufferutil loaded") }
        catch (e) { console.log("bufferutil unavailable, ws uses its JavaScript fallback") }')"
    echo "build.sh: ws-node: ok ($native) -> node $here/ws-node/server.js"
}

for peer in "${peers[@]}"; do
    case "$peer" in
    fastwebsockets | tokio-tungstenite) build_rust "$peer" ;;
    ws-node) build_node ;;
    *) die "unknown peer '$peer' (known: ${all[*]})" ;;
    esac
done
echo "build.sh: built ${peers[*]}"
