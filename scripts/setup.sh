#!/usr/bin/env bash
# Installs everything Seam needs to build, serve and test, idempotently: each step checks first
# and does nothing when its tool is already there, so a second run takes about a second.
# Only package registries are used (crates.io, npm, Debian): nothing else is reachable in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1;34msetup:\033[0m %s\n' "$*"; }

# --- Rust: the wasm target (rust-toolchain.toml names it too; rustup installs it on first use).
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  log "adding rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# --- wasm-bindgen CLI at exactly the version Cargo.lock resolved (a mismatch fails the build).
wbg_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wbg_version" ]; then
  log "installing wasm-bindgen-cli $wbg_version (a few minutes, once)"
  # Not --locked: the CLI's lockfile pins a webpki-roots version the registry no longer serves.
  cargo install wasm-bindgen-cli --version "$wbg_version" --force
fi

# --- worker-build, pinned to the worker crate's version.
worker_build_version=0.8.7
if [ "$(worker-build --version 2>/dev/null)" != "$worker_build_version" ]; then
  log "installing worker-build $worker_build_version (a few minutes, once)"
  cargo install worker-build --version "$worker_build_version" --locked --force
fi

# --- npm dependencies from the committed lockfile; skipped when node_modules matches it.
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f node_modules/.seam-lock ] || [ "$(cat node_modules/.seam-lock)" != "$lock_hash" ]; then
  log "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > node_modules/.seam-lock
fi

# --- Chromium and ChromeDriver from Debian (test tools may not download their own browsers).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing chromium and chromium-driver from Debian"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# --- DuckDB (the Python package) for the archive test, which reads the archive's files as a
# warehouse would. Into .python/ (git-ignored), not the machine's site-packages.
duckdb_version=1.1.3
if [ "$(PYTHONPATH=.python python3 -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null)" != "$duckdb_version" ]; then
  log "installing duckdb $duckdb_version (Python) into .python/"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target .python --upgrade "duckdb==$duckdb_version"
fi

# --- Local secrets: .dev.vars is git-ignored; make one with fresh random secrets, and add any
# secret a newer .dev.vars.example names to an older .dev.vars.
random_hex() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
if [ ! -f .dev.vars ]; then
  log "creating .dev.vars from .dev.vars.example with random secrets"
  : > .dev.vars
fi
for name in ADMIN_KEY SERVER_WRITE_KEY IDENTITY_SECRET PROFILE_ID_SALT DEMO_PASSWORD SECRETS_KEY HOOKS_SECRET; do
  if ! grep -q "^$name=" .dev.vars; then
    log "adding a random $name to .dev.vars"
    prefix=""
    [ "$name" = SERVER_WRITE_KEY ] && prefix="seam_server_"
    printf '%s=%s%s\n' "$name" "$prefix" "$(random_hex)" >> .dev.vars
  fi
done
# Local receivers (tests, a webhook on this machine) may be destinations here, never in a
# deployment (core::activate::policy::check_url).
if ! grep -q "^ALLOW_LOCAL_DESTINATIONS=" .dev.vars; then
  log "allowing local destination receivers in .dev.vars"
  printf 'ALLOW_LOCAL_DESTINATIONS=true\n' >> .dev.vars
fi
