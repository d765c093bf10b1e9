#!/usr/bin/env bash
# `npm test`: set up, build, then every check CI runs, fastest first.
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false
step() { printf '\n\033[1;35m== %s\033[0m\n' "$*"; }

step "setup"; bash scripts/setup.sh
step "build"; bash scripts/build.sh
step "cargo fmt --check"; cargo fmt --all -- --check
step "cargo clippy (native)"; cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo clippy (wasm32)"
cargo clippy --workspace --target wasm32-unknown-unknown --quiet -- -D warnings
cargo clippy -p seam-sdk --tests --target wasm32-unknown-unknown --quiet -- -D warnings
# The cargo-fuzz targets are their own workspace: checked here so they keep up with core's API.
step "fuzz targets compile"; CARGO_TARGET_DIR=target/fuzz cargo check --manifest-path fuzz/Cargo.toml --bins --quiet
step "core: unit + property tests (native)"; cargo test -p seam-core
step "edge: orchestration over in-memory stores (native)"; cargo test -p seam-edge --lib
step "sdk: browser tests (headless Chromium)"
(cd sdk && CHROMEDRIVER=/usr/bin/chromedriver cargo test -p seam-sdk --target wasm32-unknown-unknown)
step "sdk: size budget"; node scripts/check-size.mjs
step "edge (workerd, local D1/KV) + end to end (Chromium -> demo site -> edge -> D1)"
node --test --test-concurrency=1 tests/edge/*.test.mjs tests/e2e/*.test.mjs
